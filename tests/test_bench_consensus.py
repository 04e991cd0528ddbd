"""The consensus-rule command: rules compared on the same simulated campaigns, any labelled pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import consensus


def write_pool(path: Path, n: int = 400, rare_share: float = 0.04, seed: int = 0) -> Path:
    """Two common classes and a rare one; the rare sources and a fifth of the rest are ambiguous."""
    rng = np.random.default_rng(seed)
    rows = ["label,ambiguous"]
    for i in range(n):
        label = "rare" if i < n * rare_share else ("common" if i % 2 else "usual")
        ambiguous = label == "rare" or rng.random() < 0.2
        rows.append(f"{label},{'true' if ambiguous else 'false'}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_full_prior_loses_the_rare_class_that_the_weakened_one_keeps(tmp_path, capsys) -> None:
    pool = write_pool(tmp_path / "pool.csv")
    out = tmp_path / "scores.json"
    code = consensus.main(
        [
            "--labels",
            str(pool),
            "--seeds",
            "0-5",
            "--rules",
            "majority,ds,ds-prior:0.25,ds-balanced",
            "--crowd",
            "400",
            "--out",
            str(out),
        ]  # fmt: skip
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| ds-prior:0.25 |" in printed and "recall rare" in printed
    saved = json.loads(out.read_text())
    rare = saved["classes"].index("rare")
    results = saved["results"]
    assert len(results) == 6 and all(r["scored"] == 400 - 30 for r in results)  # 10 gold per class
    recall = {name: np.mean([r[name]["recall"][rare] for r in results]) for name in ("ds", "ds-prior:0.25")}
    assert recall["ds-prior:0.25"] > recall["ds"] + 0.05
    # Balanced accuracy is the mean of the recalls, as printed.
    for r in results:
        assert r["ds"]["balanced"] == pytest.approx(np.mean(r["ds"]["recall"]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,class\nx,FRI\n", "needs a 'label' column"),
        ("label,ambiguous\nFRI,maybe\nFRII,no\n", "line 2: ambiguous must be true or false"),
        ("label\nFRI\nFRI\n", "at least two classes"),
    ],
)
def test_a_bad_labels_file_is_named_with_its_line(tmp_path, text, message) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        consensus.main(["--labels", str(path), "--seeds", "0"])


def test_an_unknown_rule_is_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        consensus.main(["--labels", str(write_pool(tmp_path / "p.csv")), "--rules", "ds,ds-prior:2"])
    assert "ds-prior:S" in capsys.readouterr().err

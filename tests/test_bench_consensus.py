"""The consensus-rule command: rules compared on the same simulated campaigns, any labelled pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import consensus


def write_pool(path: Path, n: int = 400, rare_share: float = 0.04, seed: int = 0, ambiguous_share: float = 0.2) -> Path:
    """Two common classes and a rare one; the rare sources and a share of the rest are ambiguous."""
    rng = np.random.default_rng(seed)
    rows = ["label,ambiguous"]
    for i in range(n):
        label = "rare" if i < n * rare_share else ("common" if i % 2 else "usual")
        ambiguous = label == "rare" or rng.random() < ambiguous_share
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
    campaigns = [r["fixed:5"] for r in results]  # the default retirement rule
    recall = {name: np.mean([c[name]["recall"][rare] for c in campaigns]) for name in ("ds", "ds-prior:0.25")}
    assert recall["ds-prior:0.25"] > recall["ds"] + 0.05
    # Balanced accuracy is the mean of the recalls, as printed.
    for c in campaigns:
        assert c["ds"]["balanced"] == pytest.approx(np.mean(c["ds"]["recall"]))


def test_a_margin_rule_spends_fewer_votes_than_a_fixed_count(tmp_path, capsys) -> None:
    pool = write_pool(tmp_path / "pool.csv", n=300, ambiguous_share=0.05)
    out = tmp_path / "scores.json"
    args = ["--labels", str(pool), "--seeds", "0-3", "--rules", "majority", "--crowd", "600"]
    assert consensus.main([*args, "--retire", "fixed:5,margin:3/9", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| margin:3/9 | majority |" in printed and "votes saved" in printed
    results = json.loads(out.read_text())["results"]
    for r in results:
        fixed, margin = r["fixed:5"], r["margin:3/9"]
        assert fixed["retired"] == margin["retired"] == r["scored"]
        assert fixed["subject_votes"] == 5 * r["scored"]
        # Three agreeing votes retire most clear sources; split ones go on to up to nine.
        assert 3 * r["scored"] < margin["subject_votes"] < fixed["subject_votes"]


def test_the_class_an_early_retirement_decided_keeps_the_rare_class(tmp_path, capsys) -> None:
    pool = write_pool(tmp_path / "pool.csv", n=300)
    out = tmp_path / "scores.json"
    args = ["--labels", str(pool), "--seeds", "0-3", "--rules", "ds,lead:ds", "--crowd", "600"]
    assert consensus.main([*args, "--retire", "fixed:5,margin:2/7", "--out", str(out)]) == 0
    assert "| margin:2/7 | lead:ds |" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    rare = saved["classes"].index("rare")
    results = saved["results"]
    for r in results:  # a fixed count decides no class early: the consensus labels every subject
        assert r["fixed:5"]["lead:ds"] == r["fixed:5"]["ds"]
    recall = {name: np.mean([r["margin:2/7"][name]["recall"][rare] for r in results]) for name in ("ds", "lead:ds")}
    assert recall["lead:ds"] > recall["ds"] + 0.05


def test_the_reference_retirement_rule_must_be_compared(tmp_path, capsys) -> None:
    pool = str(write_pool(tmp_path / "p.csv"))
    with pytest.raises(SystemExit):
        consensus.main(["--labels", pool, "--retire", "fixed:5,margin:3/9", "--reference-retire", "fixed:20"])
    assert "--reference-retire" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        consensus.main(["--labels", pool, "--retire", "margin:0/9"])
    assert "margin:K/N" in capsys.readouterr().err


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

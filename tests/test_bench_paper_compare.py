"""bench.paper_compare: paired differences of two benchmark rows over encoder and label seeds."""

from __future__ import annotations

import json

import pytest

from bench import paper_compare
from bench.paper_compare import CompareError, paired_table, read_side


def write(path, rows, split="validation", folds=5):
    results = [{"method": m, "budget": b, "seed": s, "error": e} for m, b, s, e in rows]
    path.write_text(json.dumps({"identity": {"split": split, "folds": folds}, "results": results}))
    return path


def test_a_constant_gain_is_found_exactly_and_a_method_against_itself_is_zero(tmp_path):
    files = []
    for encoder in range(3):
        rows = []
        for seed in range(6):
            base = 0.2 + 0.03 * encoder + 0.01 * seed  # subsets and encoders differ a lot ...
            rows += [("p4m", 145, seed, base - 0.04), ("resnet", 145, seed, base), ("resnet", 36, seed, base + 0.1)]
        files.append(str(write(tmp_path / f"s{encoder}.json", rows)))
    joined = ",".join(files)
    a, b = read_side(f"p4m={joined}"), read_side(f"resnet={joined}")
    (row,) = paired_table(a, b, resamples=500)  # ... but the paired difference is always -4 points
    assert (row["budget"], row["encoders"], row["pairs"], row["a_better"]) == (145, 3, 18, 18)
    assert (
        row["diff"] == pytest.approx(-0.04)
        and row["low"] == pytest.approx(-0.04)
        and row["high"] == pytest.approx(-0.04)
    )
    assert row["b_mean"] - row["a_mean"] == pytest.approx(0.04)
    null = paired_table(b, read_side(f"resnet={joined}"), resamples=200)
    assert [(r["budget"], r["diff"], r["low"], r["high"], r["a_better"]) for r in null] == [
        (36, 0.0, 0.0, 0.0, 0),
        (145, 0.0, 0.0, 0.0, 0),
    ]


def test_the_interval_widens_with_the_encoders_own_spread(tmp_path):
    def side(name, spread):
        files = []
        for encoder in range(4):
            shift = spread * (encoder - 1.5)  # one encoder seed better, another worse
            rows = [("m", 145, s, 0.2 + shift + 0.001 * s) for s in range(5)] + [("r", 145, s, 0.2) for s in range(5)]
            files.append(str(write(tmp_path / f"{name}{encoder}.json", rows)))
        return ",".join(files)

    steady, shaky = side("steady", 0.0), side("shaky", 0.05)
    (tight,) = paired_table(read_side(f"m={steady}"), read_side(f"r={steady}"), resamples=500)
    (wide,) = paired_table(read_side(f"m={shaky}"), read_side(f"r={shaky}"), resamples=500)
    assert tight["high"] - tight["low"] < 0.01 < wide["high"] - wide["low"]
    assert wide["low"] < 0 < wide["high"]  # the gain of one lucky encoder is not a gain


def test_pairings_that_would_compare_different_sources_are_refused(tmp_path, capsys):
    valid = write(tmp_path / "v.json", [("m", 145, 0, 0.2)])
    test = write(tmp_path / "t.json", [("m", 145, 0, 0.2)], split="test", folds=None)
    other_folds = write(tmp_path / "v3.json", [("m", 145, 0, 0.2)], folds=3)
    elsewhere = write(tmp_path / "b.json", [("m", 36, 0, 0.2)])
    with pytest.raises(CompareError, match="not the same scored sources"):
        paired_table(read_side(f"m={valid}"), read_side(f"m={test}"))
    with pytest.raises(CompareError, match="not the same scored sources"):
        paired_table(read_side(f"m={valid}"), read_side(f"m={other_folds}"))
    with pytest.raises(CompareError, match="pair them by seed"):
        paired_table(read_side(f"m={valid},{valid}"), read_side(f"m={valid}"))
    with pytest.raises(CompareError, match="share no budget"):
        paired_table(read_side(f"m={valid}"), read_side(f"m={elsewhere}"))
    with pytest.raises(CompareError, match="no 'x' results"):
        read_side(f"x={valid}")
    with pytest.raises(CompareError, match="different splits"):
        read_side(f"m={valid},{test}")
    assert paper_compare.main([f"m={valid}", f"m={tmp_path / 'missing.json'}"]) == 2
    assert "missing.json: not a readable results file" in capsys.readouterr().err
    assert paper_compare.main([f"m={valid}", f"m={valid}"]) == 0
    assert "| 145 | 1 (1) | 20.0 ± 0.0 | 20.0 ± 0.0 | +0.0 [+0.0, +0.0] | 0/1 |" in capsys.readouterr().out


def test_the_plot_and_names_of_the_two_rows(tmp_path, capsys):
    a = write(tmp_path / "a.json", [("m", b, s, 0.2 + 0.01 * s) for b in (36, 145) for s in range(3)])
    argv = [f"m={a}", f"m={a}", "--label-a", "p4m", "--label-b", "resnet", "--plot", str(tmp_path / "c.png")]
    assert paper_compare.main(argv) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.startswith("p4m (A) against resnet (B)")

"""The replay's saving statistic and its null arm (bench.campaign), on made-up curves."""

from __future__ import annotations

import numpy as np
import pytest

from bench.campaign import common_target_saving, parse_arm, saving_interval, summarise


def _run(arm: str, seed: int, votes: list[int], accuracy: list[float]) -> dict:
    snapshots = [
        {"votes": v, "accuracy": a, "recall": {"FRI": a}, "retired": v // 5, "assisted": 0, "assisted_correct": 0}
        for v, a in zip(votes, accuracy, strict=True)
    ]
    return {"arm": arm, "seed": seed, "snapshots": snapshots, "jobs": {}, "campaign_s": 1.0}


def test_the_null_arm_is_the_reference_arm_on_its_own_stream() -> None:
    null, reference = parse_arm("a5n"), parse_arm("a5")
    assert (null.retire_after, null.policy, null.learning, null.stream) == (5, "random", False, 1)
    assert reference.stream == 0
    with pytest.raises(Exception, match="unknown arm"):
        parse_arm("a5n:0.9")


def test_the_common_target_saving_exists_for_every_pair_and_is_symmetric() -> None:
    fast = _run("b", 0, [100, 200, 300, 400], [0.5, 0.7, 0.8, 0.80])
    slow = _run("a5", 0, [100, 200, 300, 400], [0.4, 0.5, 0.7, 0.85])
    # slow ends higher: the target is fast's final 0.80, which slow reaches only at 400 votes
    assert common_target_saving(fast, slow) == pytest.approx(400 / 300)
    assert common_target_saving(slow, fast) == pytest.approx(300 / 400)
    assert common_target_saving(fast, fast) == 1.0


def test_the_interval_is_on_log_ratios_and_the_summary_says_whether_the_null_passes() -> None:
    mean, low, high = saving_interval([2.0, 0.5, 1.0])
    assert mean == pytest.approx(1.0) and low < 1.0 < high
    mean, low, high = saving_interval([2.0, 2.2, 1.8])
    assert low > 1.0
    curve = [100, 200, 300]
    runs = [_run("a5", s, curve, [0.5, 0.6, 0.7]) for s in range(3)]
    runs += [_run("a5n", s, curve, [0.5 + d, 0.6 + d, 0.7]) for s, d in enumerate([0.05, -0.05, 0.0])]
    runs += [_run("b", s, curve, [0.7, 0.7 + 0.01 * s, 0.75]) for s in range(3)]
    text = "\n".join(summarise(runs, "a5"))
    assert "a5n vs a5" in text and "the null test passes" in text
    b_line = next(line for line in text.splitlines() if line.startswith("- b vs a5"))
    assert "null test" not in b_line and float(b_line.split(": ")[1].split("x")[0]) == pytest.approx(
        np.exp(np.mean(np.log([300 / 100] * 3))), rel=0.01
    )


def test_an_arm_can_set_the_consensus_prior_and_the_summary_gives_macro_f1() -> None:
    arm = parse_arm("b:0.9@1")
    assert (arm.assist, arm.prior_strength, arm.policy) == (0.9, 1.0, None)
    assert parse_arm("c@0.25").prior_strength == 0.25 and parse_arm("b").prior_strength is None
    for bad in ("b@2", "a5@1", "b@x"):
        with pytest.raises(Exception, match="arm"):
            parse_arm(bad)
    runs = [_run("b", s, [100, 200], [0.6, 0.8]) for s in range(2)]
    for s, run in enumerate(runs):
        run["snapshots"][-1]["f1"] = {"FRI": 0.9, "hybrid": 0.3 + 0.2 * s}
    header, _, row = summarise(runs, "b")[:3]
    assert header.split(" | ")[4] == "macro F1"
    assert row.split(" | ")[4] == "65.0 +- 7.1 %"  # macro F1 per run: 60 and 70


def test_an_arm_can_set_the_retirement_rule_and_a_zooniverse_arm_cannot() -> None:
    arm = parse_arm("b:0.9@1+margin:3/9")
    assert (arm.assist, arm.prior_strength, arm.retire.margin, arm.retire.retire_after) == (0.9, 1.0, 3, 9)
    assert parse_arm("c+fixed:5").retire.name == "fixed:5" and parse_arm("b").retire is None
    for bad in ("a5+margin:3/9", "b+margin:3", "b+often"):
        with pytest.raises(Exception, match="arm"):
            parse_arm(bad)


def test_the_pacer_spaces_answers_across_volunteers_and_unpaced_never_waits() -> None:
    from bench.campaign import Pacer

    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):  # three answers at once: slots 0, 0.25, 0.5 s from now
        pacer.wait()
    assert slept == pytest.approx([0.25, 0.5])
    now[0] += 2.0  # a lull: the next answer goes at once, no debt is paid back
    pacer.wait()
    assert len(slept) == 2
    unpaced = Pacer(None, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        unpaced.wait()
    assert len(slept) == 2
    with pytest.raises(ValueError, match="pace"):
        Pacer(-1.0)


def test_the_summary_gives_the_catalogue_after_one_more_refit_when_runs_have_it() -> None:
    runs = [_run("b", s, [100, 200], [0.6, 0.8]) for s in range(2)]
    assert not any("one more Dawid-Skene refit" in line for line in summarise(runs, "b"))
    for s, run in enumerate(runs):
        run["after_refit"] = {"accuracy": 0.8 + 0.02 * s, "recall": {"FRI": 0.9}, "f1": {"FRI": 0.5, "hybrid": 0.7}}
    lines = summarise(runs, "b")
    start = next(i for i, line in enumerate(lines) if "one more Dawid-Skene refit" in line)
    assert lines[start + 2] == "| arm | accuracy | macro F1 | recall FRI |"
    assert lines[start + 4] == "| b | 81.0 +- 1.4 % | 60.0 +- 0.0 % | 90.0 +- 0.0 |"

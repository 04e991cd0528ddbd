"""The retirement rules a vote applies: fixed count, first votes agreeing, a class leading by a margin."""

from __future__ import annotations

import pytest

from ml.retirement import AGREEMENT, MARGIN, VOTE_COUNT, RetirementRule, decided_class, lead


@pytest.mark.parametrize(
    ("labels", "expected"),
    [([], 0), (["a"], 1), (["a", "a", "b"], 1), (["a", "b"], 0), (["b", "a", "a", "a", "c"], 2), (list("aaaa"), 4)],
)
def test_the_lead_is_the_top_count_minus_the_runner_up(labels, expected) -> None:
    assert lead(labels) == expected


def test_a_fixed_rule_retires_at_its_count_only() -> None:
    rule = RetirementRule(retire_after=3)
    assert [rule.reason(list("aaa")[:k]) for k in range(4)] == ["", "", "", VOTE_COUNT]


def test_agreement_looks_at_the_first_votes_only() -> None:
    rule = RetirementRule(retire_after=5, agreement=2)
    assert rule.reason(["a", "a"]) == AGREEMENT
    assert rule.reason(["a", "b", "b", "b"]) == ""  # the first two differ: on to the count
    assert rule.reason(["a", "b", "b", "b", "b"]) == VOTE_COUNT


def test_a_margin_waits_while_the_votes_split_and_stops_at_the_cap() -> None:
    rule = RetirementRule(retire_after=7, margin=3)
    assert rule.reason(list("aa")) == ""
    assert rule.reason(list("aaa")) == MARGIN
    assert rule.reason(list("abaa")) == ""  # 3 against 1: a lead of 2
    assert rule.reason(list("abaaa")) == MARGIN
    assert rule.reason(list("ababab")) == ""
    assert rule.reason(list("abababa")) == VOTE_COUNT  # the cap retires a split subject


@pytest.mark.parametrize("text", ["fixed:5", "agree:3/5", "margin:3/10"])
def test_a_rule_reads_back_its_own_name(text) -> None:
    assert RetirementRule.parse(text).name == text


@pytest.mark.parametrize("text", ["fixed:0", "margin:3", "margin:0/5", "agree:x/5", "vote:3/5", "fixed:5/7"])
def test_a_bad_rule_is_refused_with_the_forms_it_takes(text) -> None:
    with pytest.raises(ValueError, match="margin:K/N"):
        RetirementRule.parse(text)


@pytest.mark.parametrize(
    ("reason", "labels", "decided"),
    [
        ("margin", ["FRI", "hybrid", "hybrid", "hybrid"], "hybrid"),
        ("agreement", ["FRII", "FRII", "FRII"], "FRII"),
        ("vote count", ["FRI", "FRI", "FRII", "FRII", "hybrid"], None),
        ("", ["FRI", "FRI"], None),
        ("machine-assisted", ["FRI"], None),
    ],
)
def test_only_an_early_retirement_decides_the_class(reason, labels, decided) -> None:
    assert decided_class(reason, labels) == decided


def test_a_rule_decides_the_class_its_votes_retire_a_subject_with() -> None:
    rule = RetirementRule(retire_after=7, margin=2)
    assert rule.decided(["FRI", "FRII", "FRII", "FRII"]) == "FRII"
    assert rule.decided(["FRI", "FRII", "FRII"]) is None  # still open
    assert rule.decided(["FRI", "FRII", "hybrid", "FRI", "FRII", "hybrid", "FRI"]) is None  # by count
    assert RetirementRule(retire_after=5, agreement=2).decided(["hybrid", "hybrid"]) == "hybrid"

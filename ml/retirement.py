"""When a subject has had enough votes: the retirement rules of a workflow, as pure functions.

Radio Galaxy Zoo retired every extended source after a fixed number of votes (20). Most
sources do not need that many: when the first few volunteers agree, more votes rarely change
the answer, while a source they split on is worth more votes than the rest. A sequential
rule spends the votes where the answers disagree:

- ``retire_after`` (N): every subject retires after N votes;
- ``agreement`` (K): it retires as soon as its first K votes agree (the product's
  ``Workflow.retire_on_agreement``);
- ``margin`` (K): it retires as soon as its leading class has K votes more than every other
  (a sequential probability ratio test for volunteers of equal skill: the evidence of a
  class-symmetric crowd depends on the vote counts' difference only), the product's
  ``Workflow.retire_on_margin``.

The same :class:`RetirementRule` retires subjects in the product (a vote's hot path) and in the
offline campaigns of ``bench/consensus.py``, so the benchmark measures the shipped rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ml.consensus import majority

#: A subject's ``retire_reason`` for each rule.
AGREEMENT = "agreement"
MARGIN = "margin"
VOTE_COUNT = "vote count"
#: The reasons that decide a class as well as the retirement: the votes agreed, or one class led.
EARLY_REASONS = (AGREEMENT, MARGIN)


def lead(labels: Sequence[Hashable]) -> int:
    """Votes of the most voted class minus those of the runner-up (all votes when only one class has any)."""
    counts = sorted(Counter(labels).values(), reverse=True)
    if not counts:
        return 0
    return counts[0] - (counts[1] if len(counts) > 1 else 0)


def decided_class(reason: str, labels: Sequence[Hashable]) -> Hashable | None:
    """The class a subject retired with ``reason`` was decided on by its votes (oldest first): the
    leading class when it retired early (agreement or margin: the class that agreed or led), None
    for a retirement by count or none, where the consensus decides.

    A sequential rule stops on the evidence for one class; labelling such a subject with another
    class (as a Dawid-Skene posterior with a strong class prior can, two hybrid votes becoming FRII)
    contradicts the reason the subject retired and loses rare classes (docs/benchmarks.md,
    "The class a retirement decided on").
    """
    if reason not in EARLY_REASONS or not labels:
        return None
    return majority(labels)[0]  # the most voted class, ties to the class voted first


@dataclass(frozen=True)
class RetirementRule:
    """Retire after ``retire_after`` votes, or earlier by agreement or margin (0: that rule off)."""

    retire_after: int = 5
    agreement: int = 0
    margin: int = 0

    def __post_init__(self) -> None:
        if self.retire_after < 1:
            raise ValueError(f"retire_after must be at least 1, got {self.retire_after}")
        for name in ("agreement", "margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")

    def reason(self, labels: Sequence[Hashable]) -> str:
        """Why the votes so far (oldest first) retire a subject, or '' when they do not."""
        k = self.agreement
        if k and len(labels) >= k and len(set(labels[:k])) == 1:
            return AGREEMENT
        if self.margin and lead(labels) >= self.margin:
            return MARGIN
        if len(labels) >= self.retire_after:
            return VOTE_COUNT
        return ""

    def decided(self, labels: Sequence[Hashable]) -> Hashable | None:
        """The class these votes retire a subject with early (:func:`decided_class`), or None."""
        return decided_class(self.reason(labels), labels)

    @property
    def name(self) -> str:
        """``fixed:N``, ``agree:K/N`` or ``margin:K/N`` (what :meth:`parse` reads)."""
        if self.margin and not self.agreement:
            return f"margin:{self.margin}/{self.retire_after}"
        if self.agreement and not self.margin:
            return f"agree:{self.agreement}/{self.retire_after}"
        if not self.agreement and not self.margin:
            return f"fixed:{self.retire_after}"
        return f"agree:{self.agreement}+margin:{self.margin}/{self.retire_after}"

    @classmethod
    def parse(cls, text: str) -> RetirementRule:
        """``fixed:N``, ``agree:K/N`` or ``margin:K/N`` (e.g. ``margin:3/10``)."""
        kind, _, rest = text.strip().partition(":")
        first, _, cap = rest.partition("/")
        try:
            if kind == "fixed" and not cap:
                return cls(retire_after=int(first))
            if kind in ("agree", "margin") and cap:
                k, n = int(first), int(cap)
                if k < 1:
                    raise ValueError
                return cls(retire_after=n, agreement=k) if kind == "agree" else cls(retire_after=n, margin=k)
        except ValueError:
            pass
        raise ValueError(f"unknown retirement rule {text!r}: fixed:N, agree:K/N or margin:K/N with K, N >= 1")

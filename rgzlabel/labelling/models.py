"""Workflows, the sources in them (subjects), volunteers' votes, gold standard, consensus."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

DEFAULT_CLASSES = [
    {"key": "FRI", "label": "FRI", "help": "Brightest near the core; the jets fade with distance."},
    {"key": "FRII", "label": "FRII", "help": "Brightest at the ends: hotspots at the tips of the lobes."},
    {"key": "hybrid", "label": "Hybrid", "help": "One side looks FRI, the other FRII."},
    {"key": "unsure", "label": "Not sure / other", "help": "Compact, confused, or none of these."},
]


def random_key() -> float:
    import random

    return random.random()


def default_classes() -> list[dict[str, str]]:
    return [dict(c) for c in DEFAULT_CLASSES]


class Workflow(models.Model):
    """A labelling task: the classes offered, and the rules that retire a subject.

    A subject retires after ``retire_after`` votes, as soon as the first
    ``retire_on_agreement`` votes all agree, or as soon as one class has ``retire_on_margin``
    votes more than every other (0 = off; :class:`ml.retirement.RetirementRule`). A subject
    that retires without a clear majority (below ``disagreement_threshold``) moves to
    ``expert_workflow``.
    """

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=128)
    classes = models.JSONField(default=default_classes)
    retire_after = models.PositiveSmallIntegerField(default=7, help_text="votes after which a subject retires")
    retire_on_agreement = models.PositiveSmallIntegerField(
        default=0, help_text="retire early when the first K votes agree (0: never early)"
    )
    retire_on_margin = models.PositiveSmallIntegerField(
        default=2,
        help_text=(
            "retire early when one class has this many more votes than every other (0: never early); "
            "split subjects go on up to the vote count above. 2 with a count of 7 matched 5 fixed votes' "
            "catalogue with 1.6-1.8x fewer votes on simulated campaigns (docs/benchmarks.md)"
        ),
    )
    disagreement_threshold = models.FloatField(
        default=0.0, help_text="a retired subject whose majority share is below this moves to the expert workflow"
    )
    expert_workflow = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="feeding_workflows"
    )
    experts_only = models.BooleanField(default=False, help_text="only staff and the expert group may label")
    redundancy = models.PositiveSmallIntegerField(
        default=0, help_text="extra volunteers who may hold a subject at once beyond the votes it still needs"
    )
    gold_rate_start = models.FloatField(default=0.2, help_text="share of gold subjects for a new volunteer")
    gold_rate_min = models.FloatField(default=0.02, help_text="share of gold subjects once proven reliable")
    gold_halving = models.PositiveSmallIntegerField(
        default=5, help_text="the gold share halves after each this many correct gold answers"
    )
    undo_window_s = models.PositiveIntegerField(default=30, help_text="seconds during which a vote can be undone")
    exploration_share = models.FloatField(
        default=0.2,
        help_text="share of served subjects drawn uniformly at random (their labels are the unbiased audit set)",
    )
    machine_retire_confidence = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=(
            "retire a subject early when the volunteers' Dawid-Skene posterior and the active classifier pick "
            "the same class with at least this combined probability (0: off; checked at every queue refresh)"
        ),
    )
    machine_retire_min_votes = models.PositiveSmallIntegerField(
        default=1,
        help_text="volunteer votes a subject needs before the classifier can help retire it "
        "(0: the classifier alone may retire sources no volunteer has seen)",
    )
    consensus_prior_strength = models.FloatField(
        default=0.25,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=(
            "weight of the fitted class prior in the Dawid-Skene consensus: 1 takes the most probable class "
            "(best accuracy, rare classes pulled into common ones), 0 the class the votes favour with every "
            "class equally likely; 0.25 gave the best macro F1 on simulated campaigns (docs/benchmarks.md)"
        ),
    )
    consensus_class_prior = models.JSONField(
        default=dict, blank=True, help_text="class -> prior fitted by the last Dawid-Skene refit (written by it)"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def class_prior(self):
        """The consensus's class prior over :attr:`class_keys`: the last refit's raised to
        ``consensus_prior_strength`` and renormalised; uniform before any refit (or for a class
        the refit did not see)."""
        import numpy as np

        keys = self.class_keys
        fitted = self.consensus_class_prior or {}
        prior = np.array([float(fitted.get(k, 0.0)) for k in keys])
        if len(keys) == 0 or np.any(prior <= 0):
            return np.full(len(keys), 1.0 / max(1, len(keys)))
        prior = prior**self.consensus_prior_strength
        return prior / prior.sum()

    def retirement_rule(self):
        """The :class:`ml.retirement.RetirementRule` a vote applies to this workflow's subjects."""
        from ml.retirement import RetirementRule

        return RetirementRule(
            retire_after=self.retire_after, agreement=self.retire_on_agreement, margin=self.retire_on_margin
        )

    @property
    def class_keys(self) -> list[str]:
        return [c["key"] for c in self.classes]


class Subject(models.Model):
    """A source as it stands in one workflow: its votes so far, queue priority and consensus.

    ``priority`` is written by the active-learning refresh (higher first); serving `next`
    reads it through the partial index on open subjects, never scanning the votes.
    """

    source = models.ForeignKey("catalog.Source", on_delete=models.CASCADE, related_name="subjects")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="subjects")
    priority = models.FloatField(default=0.0)
    vote_count = models.PositiveIntegerField(default=0)
    retired_at = models.DateTimeField(null=True, blank=True)
    retire_reason = models.CharField(max_length=32, blank=True)
    consensus_label = models.CharField(max_length=32, blank=True)
    consensus_confidence = models.FloatField(null=True, blank=True, help_text="majority share of the votes")
    weighted_label = models.CharField(max_length=32, blank=True, help_text="Dawid-Skene estimate")
    weighted_confidence = models.FloatField(null=True, blank=True)
    # A uniform random key drawn once: exploration serves the first open subject at or after a
    # uniform draw, so which subjects are explored is independent of their content.
    explore_key = models.FloatField(default=random_key)
    explored = models.BooleanField(default=False, help_text="drawn at random for exploration: an audit label")
    # Set by a machine-assisted retirement (volunteers and classifier agreeing), cleared if it reopens.
    assisted_label = models.CharField(
        max_length=32, blank=True, help_text="class the volunteers and the classifier agreed on"
    )
    assisted_confidence = models.FloatField(null=True, blank=True, help_text="combined probability of assisted_label")
    assisted_by = models.PositiveIntegerField(
        null=True, blank=True, help_text="id of the classifier version that helped retire the subject"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "source"], name="one_subject_per_workflow")]
        indexes = [
            models.Index(
                fields=["workflow", "-priority", "vote_count", "id"],
                name="subject_queue_idx",
                condition=Q(retired_at__isnull=True),
            ),
            models.Index(fields=["workflow", "retired_at"], name="subject_retired_idx"),
            models.Index(
                fields=["workflow", "explore_key"], name="subject_explore_idx", condition=Q(retired_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_id} in {self.workflow_id}"

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None


class Assignment(models.Model):
    """A subject served to a volunteer and not yet answered; it holds a vote slot until it expires."""

    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="assignments")
    is_gold = models.BooleanField(default=False)
    explore = models.BooleanField(default=False, help_text="served by random exploration, not by the policy")
    served_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["volunteer", "subject"], name="one_assignment_per_subject")]


class Classification(models.Model):
    """One volunteer's vote on one source. The database allows at most one per pair."""

    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="classifications")
    source = models.ForeignKey("catalog.Source", on_delete=models.CASCADE, related_name="classifications")
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="classifications")
    label = models.CharField(max_length=32)
    is_gold = models.BooleanField(default=False, help_text="an answer to a gold-standard subject")
    explore = models.BooleanField(default=False, help_text="the subject was served by random exploration")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["volunteer", "source"], name="one_vote_per_volunteer_per_source"),
        ]
        indexes = [
            models.Index(fields=["source", "label"], name="classification_source_label"),
            models.Index(fields=["volunteer", "-created_at"], name="classification_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.volunteer_id} says {self.label} for {self.source_id}"


class GoldLabel(models.Model):
    """An expert's answer for a source, mixed into volunteers' streams with feedback."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="gold_labels")
    source = models.ForeignKey("catalog.Source", on_delete=models.CASCADE, related_name="gold_labels")
    label = models.CharField(max_length=32)
    feedback = models.TextField(blank=True, help_text="shown after a volunteer answers, e.g. what to look for")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "source"], name="one_gold_label_per_source")]

    def __str__(self) -> str:
        return f"gold {self.label} for {self.source_id}"

    def save(self, *args, **kwargs) -> None:
        """A gold source leaves the consensus queue: it is served for feedback only."""
        from django.utils import timezone

        super().save(*args, **kwargs)
        Subject.objects.filter(workflow_id=self.workflow_id, source_id=self.source_id).exclude(
            retire_reason="gold"
        ).update(retired_at=timezone.now(), retire_reason="gold")


class VolunteerProfile(models.Model):
    """What the labelling flow keeps about a volunteer beyond the Django user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    is_guest = models.BooleanField(default=False, help_text="started without an account")
    tutorial_seen_at = models.DateTimeField(null=True, blank=True)
    gold_answered = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    # Dawid-Skene confusion matrix (rows: true class, columns: answer), refreshed by consensus.
    confusion = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user_id}"

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_answered if self.gold_answered else None


class RateLimitCounter(models.Model):
    """Hits of one rate-limited action by one client or account in one fixed time window.

    Kept in the database, not a per-process cache, so every web process (gunicorn workers,
    machines behind a load balancer) counts against the same limit. ``key`` is a hash of the
    client address or account name, never the address itself.
    """

    scope = models.CharField(max_length=32)
    key = models.CharField(max_length=64)
    window_start = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key", "window_start"], name="one_counter_per_window"),
        ]
        indexes = [models.Index(fields=["window_start"], name="ratelimit_window_idx")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key[:8]}: {self.hits} since {self.window_start:%H:%M}"


class Flag(models.Model):
    """A volunteer's note that a source is interesting (like Radio Galaxy Zoo's Talk).

    One per volunteer and source: flagging again edits the note. Volunteers see only their
    own flags; scientists see every flag, with volunteers pseudonymous in the exports.
    """

    NOTE_MAX_LENGTH = 280

    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flags")
    source = models.ForeignKey("catalog.Source", on_delete=models.CASCADE, related_name="flags")
    note = models.CharField(max_length=NOTE_MAX_LENGTH, help_text="what is interesting about it, in a few words")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["volunteer", "source"], name="one_flag_per_volunteer")]

    def __str__(self) -> str:
        return f"{self.volunteer_id} flagged {self.source_id}"


class ConsensusSnapshot(models.Model):
    """The consensus catalogue of a workflow as one Dawid-Skene refit left it: the live campaign's curve.

    Written by every refit (:func:`rgzlabel.labelling.services.recompute_consensus`), so the
    dashboard can draw the campaign's own progress against its votes, as the replay draws it
    (``bench/campaign.py``). There is no truth in a live campaign: ``estimated_accuracy`` is the
    model's own expectation (the mean posterior of the chosen class over the retired subjects),
    and ``gold_accuracy`` the volunteers' share of right answers on gold sources.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="consensus_snapshots")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    n_votes = models.PositiveIntegerField(help_text="votes in the workflow, gold answers included")
    n_retired = models.PositiveIntegerField(help_text="subjects retired by their votes (gold excluded)")
    estimated_accuracy = models.FloatField(null=True, blank=True)
    gold_accuracy = models.FloatField(null=True, blank=True)
    class_counts = models.JSONField(default=dict, help_text="retired subjects per consensus class")
    prior_strength = models.FloatField(help_text="the workflow's consensus_prior_strength at the refit")

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"consensus of {self.workflow_id} at {self.n_votes} votes"

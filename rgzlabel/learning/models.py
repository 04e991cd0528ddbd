"""Versioned model artefacts and the background jobs that make them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class EncoderVersion(models.Model):
    """A pretrained encoder checkpoint and what it was trained on."""

    name = models.CharField(max_length=128, unique=True)
    architecture = models.CharField(max_length=64)
    config = models.JSONField(default=dict)
    checkpoint_path = models.CharField(max_length=1024)
    data_hash = models.CharField(max_length=64, blank=True, help_text="hash of the source ids it saw")
    n_images = models.PositiveIntegerField(default=0)
    code_version = models.CharField(max_length=64, blank=True)
    curves = models.JSONField(default=dict, blank=True, help_text="training curves, e.g. loss per epoch")
    job = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class EmbeddingSet(models.Model):
    """One float32 matrix of embeddings (a memory-mapped file), keyed by source id.

    The matrix lives on disk (``path``), never as one database row per number or source.
    """

    METHOD_CHOICES = [("encoder", "pretrained encoder"), ("pca", "pixel PCA (cold start)")]
    #: ``ml.augment.TestViews``: how the encoder looked at each cutout (queries must look the same way).
    VIEWS_CHOICES = [("centre", "centre view"), ("dihedral", "mean of 8 rotations/flips")]

    encoder = models.ForeignKey(
        EncoderVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="embedding_sets"
    )
    method = models.CharField(max_length=16, choices=METHOD_CHOICES)
    views = models.CharField(max_length=16, choices=VIEWS_CHOICES, default="centre")
    path = models.CharField(max_length=1024, help_text="folder holding the matrix and the source ids")
    n_sources = models.PositiveIntegerField()
    dim = models.PositiveIntegerField()
    is_active = models.BooleanField(default=False)
    job = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_embedding_set")
        ]

    def __str__(self) -> str:
        return f"embedding set {self.pk} ({self.method}, {self.n_sources}x{self.dim})"


class ClassifierVersion(models.Model):
    """A few-label classifier trained on an embedding set, with its evaluation.

    A retrain is promoted to active only when it is not worse than the active version on
    the same unbiased items (gold + random-exploration labels it did not train on); a
    rejected version is kept with ``promotion = "rejected"`` and the reason. An admin's
    "make active" pins a version: it stays active through retrains until unpinned.
    """

    PROMOTION_CHOICES = [("", "not decided"), ("promoted", "promoted"), ("rejected", "not promoted")]

    embedding_set = models.ForeignKey(EmbeddingSet, on_delete=models.PROTECT, related_name="classifiers")
    classes = models.JSONField(default=list, help_text="class keys, in the order of the probability columns")
    n_labels = models.PositiveIntegerField()
    labels_until = models.DateTimeField(null=True, blank=True, help_text="newest consensus label it learned from")
    metrics = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=1024, blank=True)
    is_active = models.BooleanField(default=False)
    promoted_at = models.DateTimeField(null=True, blank=True)
    is_pinned = models.BooleanField(default=False, help_text="made active by an admin: retrains do not replace it")
    promotion = models.CharField(max_length=16, choices=PROMOTION_CHOICES, blank=True)
    promotion_reason = models.CharField(max_length=512, blank=True)
    job = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_classifier")
        ]

    def __str__(self) -> str:
        return f"classifier {self.pk} ({self.n_labels} labels)"

    @property
    def accuracy_text(self) -> str:
        """E.g. "72.5 % +- 8 (40 gold + 12 exploration)": the estimate, its 95 % half-width, its items."""
        metrics = self.metrics or {}
        if metrics.get("accuracy") is None:
            return "not evaluated"
        text = f"{100 * metrics['accuracy']:.1f} %"
        if metrics.get("accuracy_low") is not None:
            half = 100 * (metrics["accuracy_high"] - metrics["accuracy_low"]) / 2
            text += f" +- {half:.0f}"
        n_gold, n_audit = metrics.get("n_gold"), metrics.get("n_audit")
        if n_gold is not None:
            text += f" ({n_gold} gold" + (f" + {n_audit} exploration)" if n_audit else ")")
        else:
            text += f" ({metrics.get('n_eval', '?')} {metrics.get('evaluated_on', 'items')})"
        return text


class Job(models.Model):
    """A unit of background work run by a Celery worker, with its progress for the UI."""

    class Kind(models.TextChoices):
        INGEST = "ingest", "ingest images"
        EMBED = "embed", "embed the pool"
        PRETRAIN = "pretrain", "pretrain the encoder"
        FINETUNE = "finetune", "fine-tune the encoder on consensus labels"
        RETRAIN = "retrain", "retrain the classifier"
        REFRESH = "refresh", "refresh the labelling queue"
        EVALUATE = "evaluate", "evaluate a classifier"
        INDEX = "index", "map and search index of an embedding set"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)
    #: Kinds of which at most one may be queued or running at a time (a database constraint):
    #: two triggers at once produce one job.
    SINGLETON_KINDS = (Kind.PRETRAIN, Kind.FINETUNE, Kind.RETRAIN, Kind.REFRESH)
    #: Singleton kinds whose trigger during a run asks for one more run afterwards: a refresh that
    #: began before a retrain promoted a classifier ranks with the old one, so a trigger that
    #: merely joined it would leave the queue stale until the next retrain.
    RUN_AGAIN_KINDS = (Kind.REFRESH,)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1")
    message = models.CharField(max_length=512, blank=True, help_text="latest progress line, e.g. epoch and loss")
    metrics = models.JSONField(default=dict, blank=True, help_text="latest progress figures (loss, images/s, eta)")
    result = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    log = models.TextField(blank=True, help_text="the job's progress lines, newest last (bounded)")
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    queue = models.CharField(max_length=16, default="default")
    celery_task_id = models.CharField(max_length=64, blank=True)
    cancel_requested = models.BooleanField(default=False)
    run_again = models.BooleanField(
        default=False, help_text="triggered again while it ran: it is queued once more when it ends"
    )
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "state"], name="job_kind_state_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(state__in=["queued", "running"])
                & Q(kind__in=["pretrain", "finetune", "retrain", "refresh"]),
                name="one_active_job_per_singleton_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at or self.started_at
        return (end - self.started_at).total_seconds()


class JobChunk(models.Model):
    """One piece of a job split across workers (rows of an embedding, files of an ingest).

    The job hands its chunks to the workers and stays running; each chunk is a Celery task
    retried on failure (``RGZ_CHUNK_RETRIES``); the chunk that finishes last finishes the job
    (see ``rgzlabel.learning.chunks``). The job's progress is the sum of its chunks'.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    params = models.JSONField(default=dict, help_text="what this chunk does, e.g. its rows or files")
    size = models.PositiveIntegerField(help_text="items (rows, files) in this chunk")
    done = models.PositiveIntegerField(default=0, help_text="items finished in the current attempt")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_chunk_per_index")]

    def __str__(self) -> str:
        return f"chunk {self.index} of job #{self.job_id} ({self.state})"


#: The queue policy that picks among ``candidates`` from the campaign's own labels at every refresh.
GUARDED = "guarded"
#: Policies the guarded queue weighs against random by default.
GUARDED_CANDIDATES = ["margin", "density_weighted", "diverse_uncertainty"]


def default_candidates() -> list[str]:
    return list(GUARDED_CANDIDATES)


class QueuePolicy(models.Model):
    """How the labelling queue of a workflow is ranked.

    ``policy`` is ``"guarded"`` (the default: ``ml.guard.choose_policy`` picks one of
    ``candidates`` from the campaign's unbiased labels at each refresh, random unless one is
    measurably better) or a concrete ``ml.policies`` policy an admin pinned. The last choice
    and its reason are kept for the dashboard.
    """

    workflow = models.OneToOneField("labelling.Workflow", on_delete=models.CASCADE, related_name="queue_policy")
    policy = models.CharField(max_length=32, default=GUARDED)
    params = models.JSONField(default=dict, blank=True, help_text="the policy's own parameters")
    candidates = models.JSONField(default=default_candidates, blank=True, help_text="policies the guarded queue weighs")
    queue_length = models.PositiveIntegerField(default=1000, help_text="subjects ranked at each refresh")
    seed = models.PositiveIntegerField(default=0)
    chosen_policy = models.CharField(max_length=32, blank=True, help_text="the policy the last refresh ranked with")
    choice_reason = models.CharField(max_length=512, blank=True)
    choice_gains = models.JSONField(default=dict, blank=True, help_text="per candidate: gain vs random, 95 % CI")
    choice_n_audit = models.PositiveIntegerField(default=0)
    chosen_at = models.DateTimeField(null=True, blank=True)
    choice_embedding_set = models.ForeignKey(
        EmbeddingSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    rejudge_growth = models.FloatField(
        default=0.2,
        help_text="hold the guarded queue's tournament again once its unbiased labels have grown by this "
        "fraction (0: at every refresh); a new embedding or an edit here always holds it again",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "queue policies"

    def choice_is_current(self, embedding_set: EmbeddingSet, n_audit: int, min_audit: int) -> bool:
        """Whether the last tournament still stands: same embedding and settings, and fewer than
        ``rejudge_growth`` more unbiased labels (below ``min_audit`` nothing was judged, so any
        change counts). The tournament costs seconds to minutes; its answer moves with the evidence,
        whose interval narrows with the square root of the labels, not with every new label."""
        if not self.chosen_policy or self.chosen_at is None or self.choice_embedding_set_id != embedding_set.pk:
            return False
        if self.updated_at > self.chosen_at:  # an admin changed the candidates, the seed, the policy
            return False
        if self.choice_n_audit < min_audit:
            return n_audit == self.choice_n_audit
        return self.choice_n_audit <= n_audit < self.choice_n_audit * (1 + self.rejudge_growth)

    def __str__(self) -> str:
        return f"{self.policy} for {self.workflow}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from ml.policies import PolicyConfigError, policy_parameters

        if not self.rejudge_growth >= 0:
            raise ValidationError({"rejudge_growth": "a fraction of 0 or more (0: at every refresh)"})
        if self.policy == GUARDED:
            for name in self.candidates:
                try:
                    policy_parameters(name)
                except PolicyConfigError as exc:
                    raise ValidationError({"candidates": str(exc)}) from exc
            if self.params:
                raise ValidationError({"params": "the guarded queue takes no parameters; its candidates use defaults"})
            return
        try:
            known = policy_parameters(self.policy)
        except PolicyConfigError as exc:
            raise ValidationError({"policy": str(exc)}) from exc
        unknown = sorted(set(self.params) - set(known))
        if unknown:
            raise ValidationError({"params": f"{self.policy} takes {sorted(known) or 'no parameters'}, not {unknown}"})


def default_pretrain_preset() -> str:
    """The preset the loop's own pretrainings use until an admin picks another: the server's
    ``RGZ_PRETRAIN_PRESET``, the one its first pretraining used."""
    return settings.RGZ_PRETRAIN_PRESET


class LoopSettings(models.Model):
    """When the learning loop runs by itself; read by beat's tick every minute, so edits apply at once."""

    retrain_min_new_labels = models.PositiveIntegerField(
        default=20, help_text="retrain once this many new consensus labels exist"
    )
    retrain_every_minutes = models.PositiveIntegerField(
        default=60, help_text="retrain at least this often while new labels exist (0: only by count)"
    )
    pretrain_growth_fraction = models.FloatField(
        default=0.25, help_text="pretrain again when the pool grew by this fraction since the last encoder (0: never)"
    )
    pretrain_every_days = models.PositiveIntegerField(
        default=0, help_text="pretrain again when the latest encoder is this many days old (0: never by age)"
    )
    pretrain_preset = models.CharField(
        max_length=32,
        default=default_pretrain_preset,
        help_text="the encoder recipe of the loop's pretrainings (ml.config.PRETRAIN_PRESETS)",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "loop settings"

    def __str__(self) -> str:
        return "learning-loop settings"

    @classmethod
    def current(cls) -> LoopSettings:
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings

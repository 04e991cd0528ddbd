"""Services of the learning loop: embedding the pool, pretraining, promoting versions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from rgzlabel.catalog.models import Cutout
from rgzlabel.learning.jobs import JobContext
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job


def load_pool(
    *, chunk_size: int = 2000, context: JobContext | None = None, source_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All preprocessed cutouts (or those of ``source_ids``) as (ids int64 (N,), images uint8 (N, S, S)).

    Streams rows in chunks into one preallocated array, so a 100k pool costs its uint8
    size (2.25 GB at 150x150) and not a Python object per row on top.
    """
    rows = Cutout.objects.order_by("source_id")
    if source_ids is not None:
        rows = rows.filter(source_id__in=[int(i) for i in source_ids])
    total = rows.count()
    if total == 0:
        raise ValueError("the pool is empty: ingest some sources first (manage.py ingest)")
    sizes = set(rows.values_list("size", flat=True).distinct())
    if len(sizes) != 1:
        raise ValueError(f"cutouts of different sizes in the pool: {sorted(sizes)}")
    size = sizes.pop()
    ids = np.empty(total, dtype=np.int64)
    images = np.empty((total, size, size), dtype=np.uint8)
    count = 0
    for source_id, pixels in rows.values_list("source_id", "pixels").iterator(chunk_size=chunk_size):
        if count == total:  # rows added while we read: take the snapshot we counted
            break
        ids[count] = source_id
        images[count] = np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(size, size)
        count += 1
        if context is not None and count % chunk_size == 0:
            context.progress(0.2 * count / total, f"loaded {count}/{total} cutouts")
    return ids[:count], images[:count]


def embeddings_folder() -> Path:
    """A new, not yet existing folder for one embedding set (written atomically by ml.embed)."""
    parent = settings.DATA_DIR / "embeddings"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / uuid.uuid4().hex[:12]


def activate_embedding_set(embedding_set: EmbeddingSet) -> None:
    """Make ``embedding_set`` the one the active-learning policy reads, atomically."""
    with transaction.atomic():
        EmbeddingSet.objects.filter(is_active=True).exclude(pk=embedding_set.pk).update(is_active=False)
        EmbeddingSet.objects.filter(pk=embedding_set.pk).update(is_active=True)


def torch_device(context: JobContext) -> str | None:
    """The configured device (None = auto); warns in the job when training falls back to the CPU."""
    import torch

    if settings.RGZ_TORCH_THREADS:
        torch.set_num_threads(settings.RGZ_TORCH_THREADS)
    configured = settings.RGZ_TORCH_DEVICE
    if configured == "auto":
        if not torch.cuda.is_available():
            context.warn("no CUDA device on this worker: running on the CPU")
        return None
    return configured


def embed_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Embed every ingested source, store the matrix on disk and activate it.

    ``params``: ``method`` = ``"pca"`` (pixel PCA, seconds on a CPU: the cold start) or
    ``"encoder"`` with ``encoder`` = an EncoderVersion id, and optional ``views`` (``"dihedral"``
    or ``"centre"``, default ``RGZ_EMBED_VIEWS``).
    """
    from ml.embed import embed_to_folder, write_embeddings

    method = job.params.get("method", "pca")
    if method not in {"pca", "encoder"}:
        raise ValueError(f"unknown embedding method {method!r}: expected 'pca' or 'encoder'")
    encoder_version = _version_param(job.params, "encoder", EncoderVersion) if method == "encoder" else None
    views = "centre" if encoder_version is None else job.params.get("views", settings.RGZ_EMBED_VIEWS)
    ids, images = load_pool(context=context)
    folder = embeddings_folder()
    if encoder_version is None:
        from ml.baseline import pixel_pca_embeddings

        context.progress(0.25, f"projecting {len(ids)} cutouts onto pixel principal components", force=True)
        matrix = pixel_pca_embeddings(images, dim=int(job.params.get("dim", 64)), seed=int(job.params.get("seed", 0)))
        write_embeddings(folder, ids, matrix)
        dim = int(matrix.shape[1])
    else:
        from ml.checkpoint import load_encoder

        context.progress(0.25, f"embedding {len(ids)} cutouts with {encoder_version.name} ({views} views)", force=True)
        encoder = load_encoder(encoder_version.checkpoint_path)
        embed_to_folder(encoder, images, ids, folder, device=torch_device(context), views=views)
        dim = int(encoder.feature_dim)
    embedding_set = EmbeddingSet.objects.create(
        encoder=encoder_version,
        method=method,
        views=views,
        path=str(folder),
        n_sources=len(ids),
        dim=dim,
        job=job,
    )
    activate_embedding_set(embedding_set)
    following = after_new_embedding() if job.params.get("chain", True) else None
    return {
        "summary": f"embedded {len(ids)} sources ({dim}-d, {method})",
        "embedding_set": embedding_set.pk,
        "n_sources": len(ids),
        "dim": dim,
        "next_job": following.pk if following else None,
    }


def training_reporter(context: JobContext) -> Callable[[Any], None]:
    """A training loop's progress callback that writes the job's progress line and figures."""

    def report(p: Any) -> None:  # ml.train.TrainingProgress
        context.progress(
            0.2 + 0.75 * p.fraction,
            f"epoch {p.epoch + 1}, step {p.step}/{p.total_steps}, loss {p.loss:.4f}, "
            f"{p.images_per_s:.1f} img/s, {p.eta_s / 60:.1f} min left",
            force=p.step == p.total_steps,  # the last step is always recorded, however soon it comes
            epoch=p.epoch + 1,
            step=p.step,
            total_steps=p.total_steps,
            loss=p.loss,
            images_per_s=p.images_per_s,
            eta_s=p.eta_s,
        )

    return report


def pretrain_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Pretrain a BYOL encoder on the whole pool, record it, then queue its embedding.

    ``params``: ``preset`` (``paper``, ``cpu-quick``, ``tiny``), optional ``overrides``
    (config fields, e.g. ``{"epochs": 2}``) and ``seed``.
    """
    from ml.checkpoint import save_checkpoint
    from ml.config import config_to_dict, get_config
    from ml.train import pretrain

    config = get_config(job.params.get("preset", settings.RGZ_PRETRAIN_PRESET), **job.params.get("overrides", {}))
    ids, images = load_pool(context=context)

    result = pretrain(
        images,
        config,
        source_ids=ids,
        progress=training_reporter(context),
        should_stop=context.should_stop,
        device=torch_device(context),
        seed=int(job.params.get("seed", 0)),
    )
    name = f"byol-{config.name}-job{job.pk}"
    path = save_checkpoint(settings.DATA_DIR / "encoders" / f"{name}.pt", result, extra={"job": job.pk})
    encoder_version, embed = record_encoder(
        job, name, path, architecture=config.encoder.arch, config=config_to_dict(config), result=result
    )
    return {
        "summary": f"pretrained {name}: {result.steps} steps in {result.seconds:.0f} s on {result.device}",
        "encoder": encoder_version.pk,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "final_loss": result.curves.step_loss[-1] if result.curves.step_loss else None,
        "embed_job": embed.pk,
    }


def finetune_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Fine-tune an encoder on the consensus labels (the paper's recipe), record it, queue its embedding.

    ``params``: ``encoder`` (an EncoderVersion id; default the active embedding's encoder),
    ``preset`` (``paper``, ``cpu-quick``, ``tiny``; default ``RGZ_FINETUNE_PRESET``), optional
    ``overrides`` and ``seed``. Gold-standard sources are never trained on, so the classifier
    retrained on the new embedding is still scored on labels its features have not seen.
    """
    import torch

    from ml.checkpoint import load_encoder, save_checkpoint
    from ml.config import config_to_dict, get_finetune_config
    from ml.finetune import finetune
    from rgzlabel.labelling.services import default_workflow

    base = finetune_base(job.params.get("encoder"))
    preset = job.params.get("preset", settings.RGZ_FINETUNE_PRESET)
    config = get_finetune_config(preset, **job.params.get("overrides", {}))
    workflow = default_workflow()
    classes = classifier_classes(workflow)
    ids, labels, _ = consensus_labels(workflow)
    gold_ids, _ = gold_set(workflow)
    ids, labels = training_labels(ids, labels, classes, available=ids[~np.isin(ids, gold_ids)])
    pool_ids, images = load_pool(context=context, source_ids=ids)
    label_of = dict(zip(ids.tolist(), labels, strict=True))
    targets = np.array([classes.index(label_of[int(i)]) for i in pool_ids])
    context.progress(0.2, f"fine-tuning {base.name} on {len(pool_ids)} consensus labels", force=True)

    result = finetune(
        load_encoder(base.checkpoint_path),
        images,
        targets,
        config,
        n_classes=len(classes),
        progress=training_reporter(context),
        should_stop=context.should_stop,
        device=torch_device(context),
        seed=int(job.params.get("seed", 0)),
    )
    encoder = result.model.encoder.to("cpu", memory_format=torch.contiguous_format).eval()
    name = f"{base.name}-finetuned-job{job.pk}"
    path = save_checkpoint(settings.DATA_DIR / "encoders" / f"{name}.pt", encoder, extra={"job": job.pk})
    settings_used = {**base.config, "finetune": config_to_dict(config), "finetuned_from": base.name, "classes": classes}
    encoder_version, embed = record_encoder(
        job, name, path, architecture=base.architecture, config=settings_used, result=result, source_ids=pool_ids
    )
    return {
        "summary": f"fine-tuned {base.name} on {len(pool_ids)} labels in {result.seconds:.0f} s ({preset})",
        "encoder": encoder_version.pk,
        "n_labels": len(pool_ids),
        "seconds": round(result.seconds, 1),
        "final_loss": result.curves.step_loss[-1] if result.curves.step_loss else None,
        "embed_job": embed.pk,
    }


def record_encoder(
    job: Job,
    name: str,
    path: Path,
    *,
    architecture: str,
    config: dict[str, Any],
    result: Any,
    source_ids: np.ndarray | None = None,
) -> tuple[EncoderVersion, Job]:
    """Record a trained encoder (pretrained or fine-tuned) and queue its embedding of the pool.

    ``result`` is an ``ml`` training result: its curves are kept, and its data fingerprint
    when it has one (pretraining), else the hash of ``source_ids`` (the labels it was tuned on).
    """
    from ml.train import fingerprint_ids
    from rgzlabel.learning.jobs import create_job

    data = getattr(result, "data", None)
    encoder_version = EncoderVersion.objects.create(
        name=name,
        architecture=architecture,
        config=config,
        checkpoint_path=str(path),
        data_hash=(data.source_ids_sha256 or data.images_sha256) if data else fingerprint_ids(source_ids),
        n_images=data.n_images if data else len(source_ids),
        code_version=_code_version(),
        curves={"step_loss": result.curves.step_loss, "epoch_loss": result.curves.epoch_loss},
        job=job,
    )
    # The chain: a new encoder is embedded next (and, later, retrained on and queued from).
    return encoder_version, create_job(Job.Kind.EMBED, {"method": "encoder", "encoder": encoder_version.pk})


def finetune_base(encoder_id: int | None) -> EncoderVersion:
    """The encoder a fine-tuning starts from: the one asked for, else the active embedding's."""
    if encoder_id is not None:
        return EncoderVersion.objects.get(pk=encoder_id)
    active = EmbeddingSet.objects.filter(is_active=True).select_related("encoder").first()
    if active is None or active.encoder is None:
        raise ValueError("no pretrained encoder to fine-tune: the active embedding is pixel PCA; pretrain first")
    return active.encoder


def _code_version() -> str:
    from ml.checkpoint import code_version

    return (code_version() or "")[:64]


# --- the few-label classifier -------------------------------------------------------------------
#: Consensus labels that train the classifier; "unsure" and anything else are left out.
def classifier_classes(workflow) -> list[str]:
    return [key for key in workflow.class_keys if key != "unsure"]


def consensus_labels(workflow) -> tuple[np.ndarray, list[str], Any]:
    """Retired subjects with a usable consensus: (source ids, labels, newest retirement time).

    The Dawid-Skene label is preferred (it weighs volunteers by reliability), the majority
    label otherwise; subjects sent to experts have no volunteer consensus yet.
    """
    from django.db.models import Max

    from rgzlabel.labelling.models import Subject

    classes = classifier_classes(workflow)
    rows = (
        Subject.objects.filter(workflow=workflow, retired_at__isnull=False)
        .exclude(retire_reason__in=["gold", "to expert"])
        .values_list("source_id", "weighted_label", "consensus_label")
    )
    ids, labels = [], []
    for source_id, weighted, majority in rows:
        label = weighted or majority
        if label in classes:
            ids.append(source_id)
            labels.append(label)
    newest = Subject.objects.filter(workflow=workflow, retired_at__isnull=False).aggregate(t=Max("retired_at"))["t"]
    return np.array(ids, dtype=np.int64), labels, newest


def gold_set(workflow) -> tuple[np.ndarray, list[str]]:
    """The held-out expert labels the classifier is evaluated on (never used to train it)."""
    from rgzlabel.labelling.models import GoldLabel

    classes = classifier_classes(workflow)
    rows = GoldLabel.objects.filter(workflow=workflow, label__in=classes).values_list("source_id", "label")
    return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]


def evaluate(model, matrix_rows: np.ndarray, labels: list[str], classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class recall, macro F1 and the confusion matrix of ``model`` on labelled rows."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    truth = np.array([classes.index(label) for label in labels])
    predicted = model.predict(matrix_rows)
    recalls = recall_score(truth, predicted, labels=range(len(classes)), average=None, zero_division=0)
    return {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, labels=range(len(classes)), average="macro", zero_division=0)),
        "recall": {c: float(r) for c, r in zip(classes, recalls, strict=True)},
        "confusion": confusion_matrix(truth, predicted, labels=range(len(classes))).tolist(),
        "n_eval": len(truth),
    }


def promote_classifier(classifier: ClassifierVersion) -> None:
    """Make ``classifier`` the active one, atomically (also how admins roll back)."""
    from django.utils import timezone

    if not classifier.metrics.get("evaluated"):
        raise ValueError(f"{classifier} has not been evaluated; only evaluated classifiers can be promoted")
    with transaction.atomic():
        ClassifierVersion.objects.filter(is_active=True).exclude(pk=classifier.pk).update(is_active=False)
        ClassifierVersion.objects.filter(pk=classifier.pk).update(is_active=True, promoted_at=timezone.now())


def load_classifier(classifier: ClassifierVersion):
    import pickle

    with open(classifier.path, "rb") as handle:
        return pickle.load(handle)  # written by retrain_job below, never taken from users


def retrain_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Fit the classifier on the consensus labels, evaluate it, promote it, refresh the queue."""
    import pickle

    from ml.classifier import fit_classifier, fit_ensemble
    from ml.embed import read_embeddings
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.learning.jobs import create_job

    workflow = default_workflow()
    embedding_set = EmbeddingSet.objects.filter(is_active=True).first()
    if embedding_set is None:
        raise ValueError("no active embedding set: embed the pool first")
    classes = classifier_classes(workflow)
    ids, labels, newest = consensus_labels(workflow)
    stored = read_embeddings(embedding_set.path)
    ids, labels = training_labels(ids, labels, classes, available=stored.source_ids)
    counts = {c: labels.count(c) for c in classes}
    context.progress(0.3, f"fitting on {len(ids)} consensus labels {counts}", force=True)
    train_x = stored.vectors(ids)
    train_y = np.array([classes.index(label) for label in labels])
    model = fit_classifier(train_x, train_y, seed=int(job.params.get("seed", 0)))
    committee = fit_ensemble(train_x, train_y, n_members=5, seed=int(job.params.get("seed", 0)))

    context.progress(0.7, "evaluating on the held-out expert (gold) set", force=True)
    gold_ids, gold_labels = gold_set(workflow)
    keep = np.isin(gold_ids, stored.source_ids) & ~np.isin(gold_ids, ids)
    gold_ids, gold_labels = gold_ids[keep], [label for label, k in zip(gold_labels, keep, strict=True) if k]
    if len(gold_ids) >= 5:
        metrics = {**evaluate(model, stored.vectors(gold_ids), gold_labels, classes), "evaluated_on": "gold"}
    else:
        metrics = {**cross_validated(train_x, train_y, classes), "evaluated_on": "cross-validation"}
        if embedding_set.encoder is not None and embedding_set.encoder.config.get("finetuned_from"):
            metrics["caveat"] = "optimistic: the fine-tuned encoder has seen these labels; add gold labels"
    metrics.update(evaluated=True, label_counts=counts)

    folder = settings.DATA_DIR / "classifiers"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"classifier-job{job.pk}.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "committee": committee, "classes": classes}, handle)
    classifier = ClassifierVersion.objects.create(
        embedding_set=embedding_set,
        classes=classes,
        n_labels=len(ids),
        labels_until=newest,
        metrics=metrics,
        path=str(path),
        job=job,
    )
    promote_classifier(classifier)
    refresh = create_job(Job.Kind.REFRESH)
    return {
        "summary": f"classifier {classifier.pk}: {len(ids)} labels, accuracy {metrics['accuracy']:.1%} "
        f"({metrics['evaluated_on']})",
        "classifier": classifier.pk,
        "metrics": metrics,
        "refresh_job": refresh.pk,
    }


def training_labels(
    ids: np.ndarray, labels: list[str], classes: list[str], *, available: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """The consensus labels of ``available`` sources, if there are enough to train on.

    Raises:
        ValueError: Fewer than two labels in each of two classes (the counts are named).
    """
    known = np.isin(ids, available)
    ids, labels = ids[known], [label for label, keep in zip(labels, known, strict=True) if keep]
    counts = {c: labels.count(c) for c in classes}
    if sum(1 for n in counts.values() if n >= 2) < 2:
        raise ValueError(f"not enough consensus labels to train yet: {counts}; need at least 2 in two classes")
    return ids, labels


def cross_validated(train_x: np.ndarray, train_y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """An estimate when there is no gold set yet: 3-fold stratified cross-validation."""
    from sklearn.model_selection import StratifiedKFold

    from ml.classifier import fit_classifier

    n_splits = max(2, min(3, int(np.bincount(train_y).min())))
    predicted = np.empty_like(train_y)
    for fold, (train, test) in enumerate(
        StratifiedKFold(n_splits, shuffle=True, random_state=0).split(train_x, train_y)
    ):
        predicted[test] = fit_classifier(train_x[train], train_y[train], seed=fold).predict(train_x[test])
    truth_labels = [classes[i] for i in train_y]

    class _Fixed:  # evaluate() asks a model to predict; here the predictions are known
        @staticmethod
        def predict(_rows: np.ndarray) -> np.ndarray:
            return predicted

    return evaluate(_Fixed(), train_x, truth_labels, classes)


def _version_param(params: dict[str, Any], key: str, model: type[Any]) -> Any:
    """The model row a job parameter names by id, or a ValueError saying what is wrong with it."""
    value = params.get(key)
    if value in (None, ""):
        raise ValueError(f'parameter "{key}" is required, e.g. {{"{key}": 3}}')
    try:
        return model.objects.get(pk=int(value))
    except (TypeError, ValueError):
        raise ValueError(f'parameter "{key}" must be an id, not {value!r}') from None
    except model.DoesNotExist:
        raise ValueError(f'parameter "{key}": there is no {model._meta.verbose_name} {value}') from None


def evaluate_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Re-evaluate a classifier version on today's gold set.

    ``params``: ``classifier`` (a ClassifierVersion id); without it, the active classifier.
    """
    from ml.embed import read_embeddings
    from rgzlabel.labelling.services import default_workflow

    if job.params.get("classifier") in (None, ""):
        classifier = ClassifierVersion.objects.select_related("embedding_set").filter(is_active=True).first()
        if classifier is None:
            raise ValueError('no classifier is active: name one to evaluate, e.g. {"classifier": 3}')
    else:
        classifier = _version_param(job.params, "classifier", ClassifierVersion)
    bundle = load_classifier(classifier)
    stored = read_embeddings(classifier.embedding_set.path)
    gold_ids, gold_labels = gold_set(default_workflow())
    keep = np.isin(gold_ids, stored.source_ids)
    gold_ids, gold_labels = gold_ids[keep], [label for label, k in zip(gold_labels, keep, strict=True) if k]
    if len(gold_ids) == 0:
        raise ValueError("no gold-standard sources in this classifier's embedding set")
    metrics = evaluate(bundle["model"], stored.vectors(gold_ids), gold_labels, bundle["classes"])
    ClassifierVersion.objects.filter(pk=classifier.pk).update(
        metrics={**classifier.metrics, **metrics, "evaluated": True, "evaluated_on": "gold"}
    )
    return {
        "summary": f"classifier {classifier.pk}: accuracy {metrics['accuracy']:.1%} on {len(gold_ids)} gold",
        **metrics,
    }


# --- the labelling queue --------------------------------------------------------------------------
def queue_policy(workflow) -> Any:
    from rgzlabel.learning.models import QueuePolicy

    policy, _ = QueuePolicy.objects.get_or_create(workflow=workflow)
    return policy


def refresh_queue_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Rank the open subjects with the workflow's policy and store the ranking as priorities.

    ``next`` then serves by the stored priority through an index; the policy never runs on
    a volunteer's request. Without an active classifier (the cold start) the policy is the
    embedding-only ``COLD_START_POLICY``.
    """
    from ml.embed import read_embeddings
    from ml.policies import COLD_START_POLICY, policy_inputs, rank
    from rgzlabel.labelling.models import Subject
    from rgzlabel.labelling.services import default_workflow

    workflow = default_workflow()
    embedding_set = EmbeddingSet.objects.filter(is_active=True).first()
    if embedding_set is None:
        raise ValueError("no active embedding set: embed the pool first")
    stored = read_embeddings(embedding_set.path)
    policy = queue_policy(workflow)
    classifier = ClassifierVersion.objects.filter(is_active=True, embedding_set=embedding_set).first()
    name, params = (policy.policy, policy.params) if classifier else (COLD_START_POLICY, {})

    open_ids = np.array(  # list() first: NumPy would hide a database error behind a ValueError
        list(Subject.objects.filter(workflow=workflow, retired_at__isnull=True).values_list("source_id", flat=True)),
        dtype=np.int64,
    )
    open_ids = open_ids[np.isin(open_ids, stored.source_ids)]
    labelled_ids, _, _ = consensus_labels(workflow)
    pool_ids = np.concatenate([open_ids, labelled_ids[np.isin(labelled_ids, stored.source_ids)]])
    if len(open_ids) == 0:
        return {"summary": "no open subjects to rank", "ranked": 0}
    labelled_mask = np.zeros(len(pool_ids), dtype=bool)
    labelled_mask[len(open_ids) :] = True
    context.progress(0.2, f"scoring {len(pool_ids)} sources with {name}", force=True)
    inputs: dict[str, Any] = {}
    needed = policy_inputs(name)
    vectors = stored.vectors(pool_ids)
    if "embeddings" in needed:
        inputs["embeddings"] = vectors
    if classifier is not None and needed & {"probabilities", "committee_probabilities"}:
        bundle = load_classifier(classifier)
        if "probabilities" in needed:
            inputs["probabilities"] = bundle["model"].predict_proba(vectors)
        if "committee_probabilities" in needed:
            inputs["committee_probabilities"] = bundle["committee"].member_proba(vectors)
    ranked = rank(
        name,
        labelled_mask=labelled_mask,
        batch_size=min(policy.queue_length, len(open_ids)),
        seed=policy.seed,
        **inputs,
        **params,
    )
    context.progress(0.8, f"storing the ranking of {len(ranked)} subjects", force=True)
    priorities = {int(pool_ids[i]): 1.0 - position / len(ranked) for position, i in enumerate(ranked)}
    with transaction.atomic():
        Subject.objects.filter(workflow=workflow, retired_at__isnull=True).exclude(priority=0).update(priority=0)
        subjects = list(
            Subject.objects.filter(workflow=workflow, source_id__in=list(priorities)).only("id", "source_id")
        )
        for subject in subjects:
            subject.priority = priorities[subject.source_id]
        Subject.objects.bulk_update(subjects, ["priority"], batch_size=2000)
    return {
        "summary": f"ranked {len(ranked)} of {len(open_ids)} open subjects with {name}",
        "policy": name,
        "ranked": len(ranked),
        "top": [int(pool_ids[i]) for i in ranked[:10]],
        "classifier": classifier.pk if classifier else None,
    }


# --- the loop running by itself -------------------------------------------------------------------
def enough_labels_to_train(workflow) -> bool:
    _, labels, _ = consensus_labels(workflow)
    return sum(1 for c in classifier_classes(workflow) if labels.count(c) >= 2) >= 2


def after_new_embedding() -> Job:
    """A new embedding set invalidates the classifier: retrain if labels allow, else re-rank cold."""
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.learning.jobs import create_job

    kind = Job.Kind.RETRAIN if enough_labels_to_train(default_workflow()) else Job.Kind.REFRESH
    return create_job(kind)


def learning_tick() -> dict[str, Any]:
    """Beat's once-a-minute look at the loop: queue retraining or pretraining when due.

    The thresholds live in ``LoopSettings`` (admin-editable), so a change applies at the next
    tick without restarting beat, and after a broker outage the first tick catches up.
    """
    from datetime import timedelta

    from django.utils import timezone

    from rgzlabel.catalog.models import Cutout
    from rgzlabel.labelling.models import Subject
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.learning.jobs import create_job
    from rgzlabel.learning.models import LoopSettings

    loop = LoopSettings.current()
    if not loop.enabled:
        return {"enabled": False}
    actions: dict[str, Any] = {"enabled": True}
    workflow = default_workflow()
    if EmbeddingSet.objects.filter(is_active=True).exists():
        active = ClassifierVersion.objects.filter(is_active=True).first()
        new_labels = Subject.objects.filter(workflow=workflow, retired_at__isnull=False).exclude(
            retire_reason__in=["gold", "to expert"]
        )
        if active is not None and active.labels_until is not None:
            new_labels = new_labels.filter(retired_at__gt=active.labels_until)
        n_new = new_labels.count()
        overdue = loop.retrain_every_minutes and (
            active is None or timezone.now() - active.created_at >= timedelta(minutes=loop.retrain_every_minutes)
        )
        actions["new_labels"] = n_new
        if (n_new >= loop.retrain_min_new_labels or (n_new and overdue)) and enough_labels_to_train(workflow):
            actions["retrain_job"] = create_job(Job.Kind.RETRAIN).pk
    encoder = EncoderVersion.objects.first()
    if encoder is not None:
        growth = loop.pretrain_growth_fraction
        grown = growth and Cutout.objects.count() >= encoder.n_images * (1 + growth)
        age = loop.pretrain_every_days
        aged = age and timezone.now() - encoder.created_at >= timedelta(days=age)
        if grown or aged:
            actions["pretrain_job"] = create_job(Job.Kind.PRETRAIN, {"preset": loop.pretrain_preset}).pk
    return actions

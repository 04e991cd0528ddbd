"""The few-label classifier: its training labels, fitting, evaluation on gold, promotion."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from rgzlabel.learning.jobs import JobContext, row_param
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, Job


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
        .exclude(retire_reason__in=["gold", "field guide", "to expert"])
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
    from ml.embedding_store import read_embeddings
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


def evaluate_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Re-evaluate a classifier version on today's gold set.

    ``params``: ``classifier`` (a ClassifierVersion id); without it, the active classifier.
    """
    from ml.embedding_store import read_embeddings
    from rgzlabel.labelling.services import default_workflow

    if job.params.get("classifier") in (None, ""):
        classifier = ClassifierVersion.objects.select_related("embedding_set").filter(is_active=True).first()
        if classifier is None:
            raise ValueError('no classifier is active: name one to evaluate, e.g. {"classifier": 3}')
    else:
        classifier = row_param(job.params, "classifier", ClassifierVersion)
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

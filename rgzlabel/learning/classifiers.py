"""The few-label classifier: its training labels, fitting, evaluation on gold, promotion."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from rgzlabel.labelling.services import NOT_VOLUNTEER_CONSENSUS
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
        .exclude(retire_reason__in=NOT_VOLUNTEER_CONSENSUS)
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


def explored_ids(workflow) -> np.ndarray:
    """Sources drawn at random by the queue's exploration share: their labels are an unbiased sample."""
    from rgzlabel.labelling.models import Subject

    return np.array(
        Subject.objects.filter(workflow=workflow, explored=True).values_list("source_id", flat=True), dtype=np.int64
    )


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


def promote_classifier(classifier: ClassifierVersion, *, reason: str = "") -> None:
    """Make ``classifier`` the active one, atomically, and record why."""
    from django.utils import timezone

    if not classifier.metrics.get("evaluated"):
        raise ValueError(f"{classifier} has not been evaluated; only evaluated classifiers can be promoted")
    with transaction.atomic():
        ClassifierVersion.objects.filter(is_active=True).exclude(pk=classifier.pk).update(is_active=False)
        ClassifierVersion.objects.filter(pk=classifier.pk).update(
            is_active=True, promoted_at=timezone.now(), promotion="promoted", promotion_reason=reason[:512]
        )


def pin_classifier(classifier: ClassifierVersion) -> None:
    """An admin's "make active": promote ``classifier`` and keep it active until unpinned."""
    with transaction.atomic():
        promote_classifier(classifier, reason="made active by an admin (pinned)")
        ClassifierVersion.objects.exclude(pk=classifier.pk).filter(is_pinned=True).update(is_pinned=False)
        ClassifierVersion.objects.filter(pk=classifier.pk).update(is_pinned=True)


def unpin_classifier(classifier: ClassifierVersion) -> None:
    """Let retrains replace ``classifier`` again (it stays active until one is promoted)."""
    ClassifierVersion.objects.filter(pk=classifier.pk).update(is_pinned=False)


def reject_classifier(classifier: ClassifierVersion, reason: str) -> None:
    """Keep ``classifier`` but leave the active one in place, with the reason."""
    ClassifierVersion.objects.filter(pk=classifier.pk).update(promotion="rejected", promotion_reason=reason[:512])


def promotion_decision(
    new_correct: np.ndarray, active_correct: np.ndarray | None, active: ClassifierVersion | None
) -> tuple[bool, str]:
    """Whether a new version may replace the active one, judged on the same unbiased items.

    Promoted when no version is active, or when its mean paired difference in correctness
    against the active version is >= 0 (not worse on the same items); a pinned active
    version is never replaced. The reason quotes the difference and its 95 % interval.
    """
    from ml.guard import mean_interval

    if active is not None and active.is_pinned:
        return False, f"classifier {active.pk} is pinned by an admin; unpin it to let retrains replace it"
    if active is None or active_correct is None:
        return True, "no active classifier to compare with"
    if len(new_correct) == 0:
        return True, "no unbiased items to compare on; promoted on more labels"
    difference = new_correct.astype(float) - active_correct.astype(float)
    mean, low, high = mean_interval(difference)
    spread = (
        f"{100 * mean:+.1f} points (95 % interval {100 * low:+.1f} to {100 * high:+.1f}) on {len(difference)} items"
    )
    if mean >= 0:
        return True, f"not worse than classifier {active.pk}: {spread}"
    return False, f"worse than the active classifier {active.pk}: {spread}"


def accuracy_metrics(correct: np.ndarray, n_gold: int, n_audit: int) -> dict[str, Any]:
    """The accuracy on unbiased items with its Wilson 95 % interval, for storing in ``metrics``."""
    from ml.guard import accuracy_estimate

    mean, low, high = accuracy_estimate(correct)
    return {"accuracy_low": low, "accuracy_high": high, "n_gold": n_gold, "n_audit": n_audit}


def _correct_of(classifier: ClassifierVersion, ids: np.ndarray, labels: list[str]) -> np.ndarray | None:
    """Whether ``classifier`` is right on each of ``ids`` (None when it cannot predict them all)."""
    from ml.embed import read_embeddings

    try:
        bundle = load_classifier(classifier)
        stored = read_embeddings(classifier.embedding_set.path)
    except (OSError, EOFError, ValueError):
        return None
    if len(ids) == 0 or not np.isin(ids, stored.source_ids).all():
        return None
    classes = list(bundle["classes"])
    predicted = [classes[int(i)] for i in bundle["model"].predict(stored.vectors(ids))]
    return np.array([p == t for p, t in zip(predicted, labels, strict=True)])


def class_probabilities(bundle: dict[str, Any], vectors: np.ndarray) -> np.ndarray:
    """(n, len(bundle["classes"])) probabilities: the model's columns are indices into the classes it
    saw in training, so a class with no labels yet gets probability 0."""
    model = bundle["model"]
    raw = model.predict_proba(vectors)
    columns = np.asarray(getattr(model, "classes", np.arange(raw.shape[1])), dtype=np.int64)
    probabilities = np.zeros((len(vectors), len(bundle["classes"])), dtype=np.float64)
    probabilities[:, columns] = raw
    return probabilities


def load_classifier(classifier: ClassifierVersion):
    import pickle

    with open(classifier.path, "rb") as handle:
        return pickle.load(handle)  # written by retrain_job below, never taken from users


#: Members of the committee that committee policies (vote_entropy, kl_disagreement, bald) read.
COMMITTEE_MEMBERS = 5


def needs_committee(workflow) -> bool:
    """Whether the workflow's queue may run a committee policy: its policy, or one of the guarded
    queue's candidates. Only then does a retrain fit the committee (five more fits of the
    classifier, five sixths of a retrain's time on all the labels)."""
    from ml.policies import POLICIES, policy_inputs
    from rgzlabel.learning.models import GUARDED, QueuePolicy, default_candidates

    policy = QueuePolicy.objects.filter(workflow=workflow).first()
    names = [policy.policy, *policy.candidates] if policy is not None else [GUARDED, *default_candidates()]
    return any("committee_probabilities" in policy_inputs(name) for name in names if name in POLICIES)


def fit_committee(workflow, stored, classes: list[str], seed: int = 0):
    """The committee on the workflow's training labels (the consensus labels, the audit ones held out)."""
    from ml.classifier import fit_ensemble
    from ml.config import LIVE_CLASSIFIER

    ids, labels, _ = consensus_labels(workflow)
    ids, labels, _, _ = split_audit(workflow, ids, labels)
    ids, labels = training_labels(ids, labels, classes, available=stored.source_ids)
    targets = np.array([classes.index(label) for label in labels])
    return fit_ensemble(stored.vectors(ids), targets, LIVE_CLASSIFIER, n_members=COMMITTEE_MEMBERS, seed=seed)


def committee_of(classifier: ClassifierVersion, bundle: dict[str, Any], workflow, stored):
    """The committee stored with ``classifier``; one fitted now (and stored with it) when its retrain
    had no committee policy to serve (an admin chose one since)."""
    import pickle

    if bundle.get("committee") is None:
        bundle["committee"] = fit_committee(workflow, stored, list(bundle["classes"]))
        with open(classifier.path, "wb") as handle:
            pickle.dump(bundle, handle)
    return bundle["committee"]


def retrain_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Fit the classifier on the consensus labels, evaluate it, promote it if not worse, refresh the queue.

    The evaluation items are unbiased: the gold set and the labels of sources served by
    random exploration, both left out of training. The new version is compared with the
    active one on exactly those items (paired), and promoted only when not worse; a rejected
    version is kept with the reason, and a version pinned by an admin is never replaced.
    """
    import pickle

    from ml.classifier import fit_classifier, fit_ensemble
    from ml.config import LIVE_CLASSIFIER
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
    ids, labels, audit_ids, audit_labels = split_audit(workflow, ids, labels)
    embedded = np.isin(audit_ids, stored.source_ids)
    audit_ids, audit_labels = audit_ids[embedded], [label for label, e in zip(audit_labels, embedded, strict=True) if e]
    trigger = job.params.get("trigger")
    try:
        ids, labels = training_labels(ids, labels, classes, available=stored.source_ids)
    except ValueError as shortage:
        if not trigger:
            raise  # asked for by someone: say why it cannot run
        # Queued by the loop when the labels sufficed; a consensus refit since can move labels
        # (a source's Dawid-Skene label turns "unsure"), so there is nothing to train on *yet*:
        # that is not a failure for an admin to chase. A new embedding still needs its ranking.
        refresh = create_job(Job.Kind.REFRESH) if trigger == "new embedding" else None
        return {
            "summary": f"skipped: {shortage}",
            "skipped": True,
            "reason": str(shortage),
            "refresh_job": refresh.pk if refresh is not None else None,
        }
    counts = {c: labels.count(c) for c in classes}
    context.progress(0.3, f"fitting on {len(ids)} consensus labels {counts}", force=True)
    train_x = stored.vectors(ids)
    train_y = np.array([classes.index(label) for label in labels])
    seed = int(job.params.get("seed", 0))
    model = fit_classifier(train_x, train_y, LIVE_CLASSIFIER, seed=seed)
    committee = None
    if needs_committee(workflow):
        committee = fit_ensemble(train_x, train_y, LIVE_CLASSIFIER, n_members=COMMITTEE_MEMBERS, seed=seed)

    context.progress(0.7, "evaluating on the held-out gold and random-exploration labels", force=True)
    gold_ids, gold_labels = gold_set(workflow)
    keep = np.isin(gold_ids, stored.source_ids) & ~np.isin(gold_ids, ids)
    gold_ids, gold_labels = gold_ids[keep], [label for label, k in zip(gold_labels, keep, strict=True) if k]
    eval_ids = np.concatenate([gold_ids, audit_ids])
    eval_labels = [*gold_labels, *audit_labels]
    if len(eval_ids) >= 5:
        metrics = {**evaluate(model, stored.vectors(eval_ids), eval_labels, classes), "evaluated_on": "gold"}
        if len(audit_ids):
            metrics["evaluated_on"] = "gold + exploration"
        predicted = model.predict(stored.vectors(eval_ids))
        new_correct = np.array([classes[int(p)] == t for p, t in zip(predicted, eval_labels, strict=True)])
        metrics.update(accuracy_metrics(new_correct, len(gold_ids), len(audit_ids)))
    else:
        metrics = {**cross_validated(train_x, train_y, classes), "evaluated_on": "cross-validation"}
        new_correct = np.zeros(0, dtype=bool)
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
    active = ClassifierVersion.objects.select_related("embedding_set").filter(is_active=True).first()
    active_correct = _correct_of(active, eval_ids, eval_labels) if active is not None and len(new_correct) else None
    promote, reason = promotion_decision(new_correct, active_correct, active)
    if promote:
        promote_classifier(classifier, reason=reason)
    else:
        reject_classifier(classifier, reason)
    refresh = create_job(Job.Kind.REFRESH)
    verdict = "promoted" if promote else "not promoted"
    return {
        "summary": f"classifier {classifier.pk}: {len(ids)} labels, accuracy {metrics['accuracy']:.1%} "
        f"({metrics['evaluated_on']}); {verdict}: {reason}",
        "classifier": classifier.pk,
        "promoted": promote,
        "reason": reason,
        "metrics": metrics,
        "refresh_job": refresh.pk,
    }


def label_shortage(labels: list[str], classes: list[str]) -> str | None:
    """Why these labels cannot train a classifier yet (None when they can): two classes need two each."""
    counts = {c: labels.count(c) for c in classes}
    if sum(1 for n in counts.values() if n >= 2) < 2:
        return f"not enough consensus labels to train yet: {counts}; need at least 2 in two classes"
    return None


def split_audit(workflow, ids: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """(training ids, labels, audit ids, labels): labels of sources served by random exploration
    are the audit set, held out of training so they can judge the model."""
    audit = np.isin(ids, explored_ids(workflow))
    return (
        ids[~audit],
        [label for label, a in zip(labels, audit, strict=True) if not a],
        ids[audit],
        [label for label, a in zip(labels, audit, strict=True) if a],
    )


def enough_labels_to_train(workflow) -> bool:
    """Whether a retrain would find enough training labels: the same split as ``retrain_job``'s."""
    ids, labels, _ = consensus_labels(workflow)
    _, train_labels, _, _ = split_audit(workflow, ids, labels)
    return label_shortage(train_labels, classifier_classes(workflow)) is None


def training_labels(
    ids: np.ndarray, labels: list[str], classes: list[str], *, available: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """The consensus labels of ``available`` sources, if there are enough to train on.

    Raises:
        ValueError: Fewer than two labels in each of two classes (the counts are named).
    """
    known = np.isin(ids, available)
    ids, labels = ids[known], [label for label, keep in zip(labels, known, strict=True) if keep]
    shortage = label_shortage(labels, classes)
    if shortage:
        raise ValueError(shortage)
    return ids, labels


def cross_validated(train_x: np.ndarray, train_y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """An estimate when there is no gold set yet: 3-fold stratified cross-validation."""
    from sklearn.model_selection import StratifiedKFold

    from ml.classifier import fit_classifier
    from ml.config import LIVE_CLASSIFIER

    n_splits = max(2, min(3, int(np.bincount(train_y).min())))
    predicted = np.empty_like(train_y)
    for fold, (train, test) in enumerate(
        StratifiedKFold(n_splits, shuffle=True, random_state=0).split(train_x, train_y)
    ):
        predicted[test] = fit_classifier(train_x[train], train_y[train], LIVE_CLASSIFIER, seed=fold).predict(
            train_x[test]
        )
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

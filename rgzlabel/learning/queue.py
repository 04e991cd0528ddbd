"""The labelling queue: the active-learning policy ranks the open subjects into priorities."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import transaction

from rgzlabel.learning.classifiers import class_probabilities, committee_of, consensus_labels, load_classifier
from rgzlabel.learning.jobs import JobContext
from rgzlabel.learning.models import GUARDED, ClassifierVersion, EmbeddingSet, Job


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
    from ml.embedding_store import read_embeddings
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
    assisted = None
    if classifier is not None and workflow.machine_retire_confidence > 0 and len(open_ids):
        context.progress(0.05, "machine-assisted retirement: volunteers and classifier agreeing", force=True)
        assisted = assist_retirement(workflow, classifier, stored, open_ids)
        open_ids = open_ids[~np.isin(open_ids, assisted.retired)]
    labelled_ids, _, _ = consensus_labels(workflow)
    pool_ids = np.concatenate([open_ids, labelled_ids[np.isin(labelled_ids, stored.source_ids)]])
    if len(open_ids) == 0:
        retired = len(assisted.retired) if assisted is not None else 0
        return {"summary": "no open subjects to rank", "ranked": 0, "machine_assisted_retired": retired}
    labelled_mask = np.zeros(len(pool_ids), dtype=bool)
    labelled_mask[len(open_ids) :] = True
    tournament = None
    if name == GUARDED:
        context.progress(0.1, "choosing the policy from the campaign's unbiased labels", force=True)
        name, tournament = choose_guarded_policy(workflow, policy, stored, embedding_set)
        params = {}
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
            committee = committee_of(classifier, bundle, workflow, stored)
            inputs["committee_probabilities"] = committee.member_proba(vectors)
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
    summary = f"ranked {len(ranked)} of {len(open_ids)} open subjects with {name}"
    if assisted is not None:
        summary += f"; {len(assisted.retired)} retired by volunteers and classifier agreeing"
    if policy.policy == GUARDED and classifier is not None:
        kept = "" if tournament else f"; kept from the tournament of {policy.chosen_at:%Y-%m-%d %H:%M} UTC"
        summary += f" (guarded: {policy.choice_reason}{kept})"
    return {
        "summary": summary,
        "policy": name,
        "tournament_held": tournament,
        "machine_assisted_retired": len(assisted.retired) if assisted is not None else 0,
        "ranked": len(ranked),
        "top": [int(pool_ids[i]) for i in ranked[:10]],
        "classifier": classifier.pk if classifier else None,
    }


def assist_retirement(workflow, classifier: ClassifierVersion, stored, open_ids: np.ndarray) -> Any:
    """Score the open subjects with the active classifier and let labelling retire those it may."""
    from rgzlabel.labelling.services import machine_assisted_retire

    bundle = load_classifier(classifier)
    probabilities = class_probabilities(bundle, stored.vectors(open_ids))
    return machine_assisted_retire(
        workflow, open_ids.tolist(), list(bundle["classes"]), probabilities, classifier_id=classifier.pk
    )


def choose_guarded_policy(workflow, policy, stored, embedding_set: EmbeddingSet) -> tuple[str, bool]:
    """The guarded queue's policy: ``ml.guard.choose_policy`` on the campaign's labels, its choice and
    reason stored; or the stored choice while it still stands (``QueuePolicy.choice_is_current``).

    The labelled rows are the consensus labels plus the gold set; the audit rows (the
    unbiased judges) are the gold sources and those served by random exploration.

    Returns:
        (policy name, whether the tournament was held now).
    """
    from django.utils import timezone

    from ml.guard import MIN_AUDIT, choose_policy
    from rgzlabel.learning.classifiers import explored_ids, gold_set

    ids, labels, _ = consensus_labels(workflow)
    gold_ids, gold_labels = gold_set(workflow)
    audit = np.concatenate([np.isin(ids, explored_ids(workflow)), np.ones(len(gold_ids), dtype=bool)])
    ids = np.concatenate([ids, gold_ids])
    labels = [*labels, *gold_labels]
    known = np.isin(ids, stored.source_ids)
    ids, audit = ids[known], audit[known]
    known_labels = np.array([label for label, k in zip(labels, known, strict=True) if k])
    if policy.choice_is_current(embedding_set, int(audit.sum()), MIN_AUDIT):
        return policy.chosen_policy, False
    rows = stored.rows(ids)
    choice = choose_policy(
        stored.matrix, rows, known_labels, audit, list(policy.candidates), seed=policy.seed, min_audit=MIN_AUDIT
    )
    gains = {
        name: {
            "gain": [float(v) for v in values],
            "labels_ratio": [float(v) for v in choice.labels_ratio.get(name, ())],
        }
        for name, values in choice.gains.items()
    }
    type(policy).objects.filter(pk=policy.pk).update(
        chosen_policy=choice.policy,
        choice_reason=choice.reason[:512],
        choice_gains=gains,
        choice_n_audit=choice.n_audit,
        choice_embedding_set=embedding_set,
        chosen_at=timezone.now(),
    )
    policy.refresh_from_db()
    return choice.policy, True

"""What scientists look at: learning curves, the embedding map, similar sources, one source in full."""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from rgzlabel.catalog.models import Source
from rgzlabel.labelling.models import Classification, Flag, Subject
from rgzlabel.labelling.services import default_workflow
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job
from rgzlabel.science.exports import anonymise_volunteer

#: Points drawn on the embedding map at most; a random (seeded) subset beyond that.
MAP_POINTS = 20_000


# --- embeddings held in memory per process -------------------------------------------------------
@lru_cache(maxsize=2)
def _normalised(embedding_set_id: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(source ids, unit rows) of an embedding set; cached, since a set never changes once written."""
    from ml.embedding_store import read_embeddings
    from ml.similarity import normalise

    stored = read_embeddings(path)
    return np.asarray(stored.source_ids), normalise(stored.matrix)


def active_embeddings() -> tuple[EmbeddingSet, np.ndarray, np.ndarray] | None:
    embedding_set = EmbeddingSet.objects.filter(is_active=True).first()
    if embedding_set is None:
        return None
    ids, matrix = _normalised(embedding_set.pk, embedding_set.path)
    return embedding_set, ids, matrix


def similar_sources(source: Source, k: int = 12) -> list[tuple[Source, float]]:
    """The ``k`` sources nearest to ``source`` by cosine similarity of the active embeddings."""
    from ml.similarity import top_k

    active = active_embeddings()
    if active is None:
        return []
    _, ids, matrix = active
    row = np.flatnonzero(ids == source.pk)
    if len(row) == 0:
        return []
    rows, scores = top_k(matrix, matrix[row[0]], k, exclude=row)
    neighbours = Source.objects.in_bulk([int(i) for i in ids[rows]])
    return [(neighbours[int(ids[r])], float(s)) for r, s in zip(rows, scores, strict=True) if int(ids[r]) in neighbours]


def pretraining_status() -> dict[str, Any] | None:
    """The queued or running pretraining, with what a page can tell people: step, ETA, a sentence.

    ``eta_s`` is the job's measured estimate (training steps left at its step rate), plus nothing
    for the embedding that follows; ``None`` before its first step. ``None`` when no pretraining is
    queued or running.
    """
    job = Job.objects.filter(kind=Job.Kind.PRETRAIN, state__in=Job.ACTIVE_STATES).order_by("created_at").first()
    if job is None:
        return None
    metrics = job.metrics or {}
    step, total, eta_s = metrics.get("step"), metrics.get("total_steps"), metrics.get("eta_s")
    if job.state == Job.State.RUNNING and step and total and eta_s is not None:
        minutes = max(1, round(float(eta_s) / 60))
        when = f"in about {minutes} min (pretraining job #{job.pk} at step {step}/{total}, then its embedding)"
    else:
        when = f"after pretraining job #{job.pk} ({job.state}) and its embedding"
    return {"job": job.pk, "state": job.state, "step": step, "total_steps": total, "eta_s": eta_s, "when": when}


class SearchError(ValueError):
    """A similarity search that cannot run; the message says why, for the person searching."""


@lru_cache(maxsize=1)
def _encoder(checkpoint_path: str, stamp: int) -> Any:
    """The encoder of a checkpoint, loaded once per web process (``stamp``: the file's mtime).

    Search by image is the one web path that needs torch; it is imported on the first search,
    never by the rest of the site, and the checkpoint is read once, not on every request.
    """
    from ml.checkpoint import load_encoder

    return load_encoder(checkpoint_path).eval()


def similar_to_fits(path: Path, k: int = 12) -> list[tuple[Source, float]]:
    """Sources most like an uploaded FITS cutout: preprocessed as at ingest, embedded by the active encoder."""
    import os

    from ml.fits_io import read_fits
    from ml.preprocess import preprocess

    # The file first: a bad or hostile one is refused with its reason, whatever the embeddings.
    # FitsReadError / PreprocessError are ValueErrors with the reason; the declared size is
    # checked before any pixel is read.
    image = read_fits(path, max_pixels=settings.RGZ_MAX_IMAGE_PIXELS)
    cutout = preprocess(image.data, image.pixel_scale_arcsec, overwrite_input=True)
    del image
    active = active_embeddings()
    if active is None:
        raise SearchError("there is no embedding yet to search")
    embedding_set, ids, matrix = active
    if embedding_set.encoder is None:
        pretraining = pretraining_status()
        later = (
            f"it will be available {pretraining['when']}"
            if pretraining
            else "none is being trained: an admin can start a pretrain job at /jobs/"
        )
        raise SearchError(
            "the active embedding is pixel PCA (the cold start); searching from an uploaded image "
            f"needs a pretrained encoder's embedding, and {later}"
        )
    # Only now torch (seconds to import): a refused file is answered without it.
    from ml.embed import embed
    from ml.similarity import top_k

    # Looked at the way the stored rows were, or the cosines would compare different things.
    checkpoint = embedding_set.encoder.checkpoint_path
    try:
        encoder = _encoder(checkpoint, os.stat(checkpoint).st_mtime_ns)
    except OSError as exc:
        raise SearchError(f"the active encoder's checkpoint cannot be read: {exc}") from exc
    query = embed(encoder, cutout[None], device="cpu", views=embedding_set.views)[0]  # type: ignore[arg-type]
    rows, scores = top_k(matrix, query, k)
    neighbours = Source.objects.in_bulk([int(i) for i in ids[rows]])
    return [(neighbours[int(ids[r])], float(v)) for r, v in zip(rows, scores, strict=True) if int(ids[r]) in neighbours]


# --- one source --------------------------------------------------------------------------------------
def survey_links(ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
    """Cut-out services for this position: radio, and optical/infrared for the host."""
    return [
        ("FIRST cutout", f"https://third.ucllnl.org/cgi-bin/firstcutout?RA={ra_deg:.5f}&Dec={dec_deg:.5f}"),
        (
            "SkyView (FIRST, NVSS)",
            "https://skyview.gsfc.nasa.gov/current/cgi/runquery.pl?Survey=VLA+FIRST+(1.4+GHz)&Survey=NVSS"
            f"&Position={ra_deg:.5f},{dec_deg:.5f}&Pixels=300",
        ),
        ("Legacy Surveys viewer", f"https://www.legacysurvey.org/viewer?ra={ra_deg:.5f}&dec={dec_deg:.5f}&zoom=14"),
        (
            "SIMBAD around",
            f"https://simbad.cds.unistra.fr/simbad/sim-coo?Coord={ra_deg:.5f}%20{dec_deg:.5f}&Radius=30&Radius.unit=arcsec",
        ),
    ]


def sexagesimal(ra_deg: float, dec_deg: float) -> str:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra_deg * u.deg, dec_deg * u.deg).to_string("hmsdms", precision=1)


def predictions(source: Source, versions: int = 5) -> list[dict[str, Any]]:
    """Each recent classifier version's probabilities for this source (newest first)."""
    from rgzlabel.science.predictions import predict_sources

    rows = []
    for classifier in ClassifierVersion.objects.select_related("embedding_set")[:versions]:
        scored = predict_sources([source.pk], classifier)
        if scored is None or source.pk not in scored.by_source:
            continue  # this version never saw the source, or its files are gone
        probabilities = zip(scored.classes, scored.by_source[source.pk].tolist(), strict=True)
        rows.append({"classifier": classifier, "probabilities": sorted(probabilities, key=lambda p: -p[1])})
    return rows


def source_report(source: Source) -> dict[str, Any]:
    """Everything the source page shows; votes only as counts, never who cast them."""
    workflow = default_workflow()
    votes = Counter(Classification.objects.filter(source=source, is_gold=False).values_list("label", flat=True))
    report: dict[str, Any] = {
        "source": source,
        "provenances": list(source.provenances.order_by("dataset")),
        "subject": Subject.objects.filter(source=source, workflow=workflow).first(),
        "votes": votes.most_common(),
        "n_votes": sum(votes.values()),
        "predictions": predictions(source),
        "similar": similar_sources(source),
        "flags": flags_on(source),
    }
    if source.ra_deg is not None and source.dec_deg is not None:
        report["sexagesimal"] = sexagesimal(source.ra_deg, source.dec_deg)
        report["links"] = survey_links(source.ra_deg, source.dec_deg)
    return report


# --- the campaign --------------------------------------------------------------------------------------
def campaign_summary(days: int = 30) -> dict[str, Any]:
    workflow = default_workflow()
    subjects = Subject.objects.filter(workflow=workflow).exclude(retire_reason__in=["gold", "field guide"])
    since = timezone.now() - timedelta(days=days)
    per_day = list(
        Classification.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    active = ClassifierVersion.objects.filter(is_active=True).first()
    return {
        "n_subjects": subjects.count(),
        "n_retired": subjects.filter(retired_at__isnull=False).count(),
        "n_votes": Classification.objects.count(),
        "active_volunteers_7d": Classification.objects.filter(created_at__gte=timezone.now() - timedelta(days=7))
        .values("volunteer")
        .distinct()
        .count(),
        "votes_per_day": per_day,
        "classifiers": list(ClassifierVersion.objects.order_by("created_at")),
        "active_classifier": active,
        "confusion": list(zip(active.classes, active.metrics.get("confusion", []), strict=False)) if active else [],
        "encoder": EncoderVersion.objects.first(),
        "queue": queue_summary(workflow),
    }


def queue_summary(workflow) -> dict[str, Any]:
    """Which policy ranks the queue and why, the exploration share, and the saving against random.

    The saving is the guard's replay estimate for the running policy (labels random would need
    for the same accuracy, as a multiple); with random running, or before the guard could
    judge, it is not measurable and the page says so.
    """
    from rgzlabel.learning.models import GUARDED
    from rgzlabel.learning.queue import queue_policy

    policy = queue_policy(workflow)
    guarded = policy.policy == GUARDED
    from ml.policies import COLD_START_POLICY

    cold = f"{COLD_START_POLICY} (the cold start, until the first classifier)"
    running = (policy.chosen_policy or cold) if guarded else policy.policy
    candidates = [
        {"name": name, "gain": entry.get("gain"), "labels_ratio": entry.get("labels_ratio")}
        for name, entry in (policy.choice_gains or {}).items()
        if isinstance(entry, dict)
    ]
    chosen = next((c for c in candidates if c["name"] == policy.chosen_policy), None)
    if guarded and chosen and chosen["labels_ratio"]:
        ratio, low, high = chosen["labels_ratio"]
        saving = (
            f"random sampling would need {ratio:.2f}x the labels for the same accuracy "
            f"(95 % interval {low:.2f}x to {high:.2f}x; replayed on {policy.choice_n_audit} unbiased labels)"
        )
    elif guarded and policy.chosen_policy == "random":
        saving = "none: random sampling is running, because no policy is measurably better yet"
    else:
        saving = "not yet measurable"
    served = Classification.objects.filter(workflow=workflow, is_gold=False)
    return {
        "policy": policy,
        "guarded": guarded,
        "running": running,
        "reason": policy.choice_reason if guarded else "pinned by an admin",
        "candidates": candidates,
        "saving": saving,
        "exploration_share": workflow.exploration_share,
        "n_explore_votes": served.filter(explore=True).count(),
        "n_votes": served.count(),
    }


def _figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def simulated_random_curve() -> dict[str, list[float]] | None:
    """Random sampling's error curve from the recorded AL simulation (bench.al_simulation), if any."""
    import json

    from django.conf import settings

    path = Path(settings.RGZ_SIMULATION_CURVES)
    if not path.is_file():
        return None
    curves = json.loads(path.read_text())["curves"]
    setting = curves.get("volunteers") or curves.get("oracle") or {}
    return setting.get("random")


def accuracy_plot(simulated_random: dict[str, list[float]] | None = None) -> bytes:
    """Accuracy and macro F1 of each classifier version against its number of consensus labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = [c for c in ClassifierVersion.objects.order_by("n_labels") if c.metrics.get("accuracy") is not None]
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    if versions:
        labels = [c.n_labels for c in versions]
        axis.plot(labels, [100 * c.metrics["accuracy"] for c in versions], "o-", label="accuracy (gold set)")
        axis.plot(labels, [100 * c.metrics.get("macro_f1", 0) for c in versions], "s--", label="macro F1")
    if simulated_random:
        axis.plot(
            simulated_random["labels"],
            [100 - e for e in simulated_random["error"]],
            ":",
            color="grey",
            label="random sampling (simulation)",
        )
    axis.set_xscale("log")
    axis.set_xlabel("consensus labels used for training")
    axis.set_ylabel("%")
    axis.set_title("Classifier versions")
    axis.grid(alpha=0.3)
    if versions or simulated_random:
        axis.legend(loc="lower right")
    else:
        axis.text(0.5, 0.5, "no classifier yet", ha="center", transform=axis.transAxes)
    png = _figure_png(figure)
    plt.close(figure)
    return png


#: A training progress line in a job's log: "... step 120/400, loss 2.7749, ...".
_LOG_LOSS = re.compile(r"step (\d+)/(\d+), loss ([-+0-9.eE]+|nan)")


def logged_losses(log: str) -> tuple[list[int], list[float]]:
    """(step, loss) points from a training job's progress lines (each loss averages the steps since the last)."""
    steps, losses = [], []
    for match in _LOG_LOSS.finditer(log or ""):
        steps.append(int(match[1]))
        losses.append(float(match[3]))
    return steps, losses


def loss_plot(encoder: EncoderVersion | None, running: Job | None = None) -> bytes:
    """The encoder's BYOL loss per step; while a pretraining runs, its curve so far (from the job's log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.0))
    losses = (encoder.curves or {}).get("step_loss", []) if encoder else []
    steps_so_far, losses_so_far = logged_losses(running.log) if running is not None else ([], [])
    if running is not None and losses_so_far:
        total = (running.metrics or {}).get("total_steps")
        axis.plot(steps_so_far, losses_so_far, lw=1, marker="." if len(losses_so_far) < 50 else None)
        axis.set_xlabel("step")
        axis.set_ylabel("BYOL loss")
        if total:
            axis.set_xlim(0, total)
        axis.set_title(f"Pretraining job #{running.pk} so far (step {steps_so_far[-1]}/{total or '?'})")
    elif encoder is not None and losses:
        axis.plot(np.arange(1, len(losses) + 1), losses, lw=1)
        axis.set_xlabel("step")
        axis.set_ylabel("BYOL loss")
        axis.set_title(f"Pretraining of {encoder.name}")
    elif running is not None:
        axis.text(
            0.5,
            0.5,
            f"pretraining job #{running.pk} {running.state}: no step yet",
            ha="center",
            transform=axis.transAxes,
        )
    else:
        axis.text(0.5, 0.5, "no pretrained encoder yet", ha="center", transform=axis.transAxes)
    axis.grid(alpha=0.3)
    png = _figure_png(figure)
    plt.close(figure)
    return png


def embedding_map(colour_by: str = "consensus") -> dict[str, Any]:
    """2-D projection (PCA) of the active embeddings with a colour value per point.

    The projection is computed once per embedding set and kept beside its matrix.
    """
    active = active_embeddings()
    pretraining = pretraining_status()
    if active is None:
        note = f"The first embedding comes {pretraining['when']}." if pretraining else ""
        return {"points": [], "method": None, "note": note}
    embedding_set, ids, matrix = active
    note = ""
    if embedding_set.encoder is None:
        note = "This is the cold-start embedding (pixel PCA); the encoder's map comes " + (
            pretraining["when"] + "." if pretraining else "once an encoder is pretrained (a pretrain job at /jobs/)."
        )
    cache = Path(embedding_set.path) / "map_pca2.npy"
    if cache.exists():
        coords = np.load(cache)
    else:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=0).fit_transform(matrix).astype(np.float32)
        np.save(cache, coords)
    rows = np.arange(len(ids))
    if len(rows) > MAP_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAP_POINTS, replace=False))
    chosen = [int(i) for i in ids[rows]]
    values = _map_values(chosen, colour_by, embedding_set)
    names = dict(Source.objects.filter(pk__in=chosen).values_list("pk", "name"))  # for the map's table
    return {
        "method": "PCA",
        "colour_by": colour_by,
        "embedding": embedding_set.encoder.name if embedding_set.encoder else "pixel PCA (cold start)",
        "note": note,
        "points": [
            {
                "id": sid,
                "name": names.get(sid, ""),
                "x": round(float(coords[r, 0]), 4),
                "y": round(float(coords[r, 1]), 4),
                "v": values.get(sid),
            }
            for sid, r in zip(chosen, rows, strict=True)
        ],
    }


def _map_values(source_ids: list[int], colour_by: str, embedding_set: EmbeddingSet) -> dict[int, Any]:
    if colour_by == "consensus":
        workflow = default_workflow()
        return dict(
            Subject.objects.filter(workflow=workflow, source_id__in=source_ids)
            .exclude(consensus_label="")
            .values_list("source_id", "consensus_label")
        )
    if colour_by == "size":
        return dict(
            Source.objects.filter(pk__in=source_ids, angular_size_arcsec__isnull=False).values_list(
                "pk", "angular_size_arcsec"
            )
        )
    if colour_by in {"prediction", "uncertainty"}:
        from rgzlabel.science.predictions import predict_sources

        classifier = ClassifierVersion.objects.filter(is_active=True, embedding_set=embedding_set).first()
        scored = predict_sources(source_ids, classifier) if classifier else None
        if scored is None:
            return {}
        if colour_by == "prediction":
            return {s: scored.label_of(s) for s in scored.by_source}
        return {s: round(1.0 - float(p.max()), 4) for s, p in scored.by_source.items()}
    raise ValueError(f"unknown colouring {colour_by!r}: use consensus, prediction, uncertainty or size")


# --- volunteers' flags ---------------------------------------------------------------------------
def flagged_sources(limit: int = 500) -> list[dict[str, Any]]:
    """For scientists: flagged sources, most recently flagged first, each with every note."""
    flags = Flag.objects.select_related("source").order_by("-updated_at", "-id")
    by_source: dict[int, dict[str, Any]] = {}
    for flag in flags.iterator():
        entry = by_source.get(flag.source_id)
        if entry is None:
            if len(by_source) >= limit:
                continue
            entry = by_source[flag.source_id] = {"source": flag.source, "notes": [], "last": flag.updated_at}
        entry["notes"].append(
            {"volunteer": anonymise_volunteer(flag.volunteer_id), "note": flag.note, "at": flag.updated_at}
        )
    return list(by_source.values())


def flags_on(source: Source) -> list[dict[str, Any]]:
    """Every note on one source, pseudonymous, newest first (the scientists' source page)."""
    return [
        {"volunteer": anonymise_volunteer(volunteer_id), "note": note, "at": at}
        for volunteer_id, note, at in Flag.objects.filter(source=source)
        .order_by("-updated_at", "-id")
        .values_list("volunteer_id", "note", "updated_at")
    ]

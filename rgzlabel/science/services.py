"""What scientists look at: learning curves, the embedding map, similar sources, one source in full."""

from __future__ import annotations

import io
import os
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

from ml.retirement import lead
from rgzlabel.catalog.models import Source
from rgzlabel.labelling.models import Classification, ConsensusSnapshot, Flag, Subject
from rgzlabel.labelling.services import default_workflow
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job
from rgzlabel.science.exports import anonymise_volunteer

#: Points drawn on the embedding map at most; a random (seeded) subset beyond that. The browser
#: draws 100k points on a canvas in milliseconds (docs/benchmarks.md, "The embedding map").
MAP_POINTS = 100_000


# --- embeddings shared by the processes of one machine ------------------------------------------
@lru_cache(maxsize=2)
def _unit_rows(embedding_set_id: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(source ids, unit rows) of an embedding set, both memory-mapped (a set never changes once
    written): every web process maps the same ``unit.npy`` instead of holding its own copy."""
    from ml.embedding_store import IDS_FILE, read_unit_rows

    unit = read_unit_rows(path)
    return np.load(Path(path) / IDS_FILE, mmap_mode="r"), unit


def active_embeddings() -> tuple[EmbeddingSet, np.ndarray, np.ndarray] | None:
    embedding_set = EmbeddingSet.objects.filter(is_active=True).first()
    if embedding_set is None:
        return None
    ids, matrix = _unit_rows(embedding_set.pk, embedding_set.path)
    return embedding_set, ids, matrix


@lru_cache(maxsize=2)
def _opened_search(embedding_set_id: int, path: str, index_stamp: int) -> Any:
    """An embedding set's similarity search, opened once per process (``index_stamp``: the index
    file's mtime, 0 without one, so an index the index job writes later is picked up).

    Holds memory maps only (``ml.ann``): the unit rows, and the approximate index where the set
    has one; the pages are shared by every process of the machine.
    """
    from ml.ann import open_search

    return open_search(path)


def _similarity_search(embedding_set: EmbeddingSet) -> Any:
    """The set's search: its approximate index once built, exact search otherwise; an index file
    that cannot be used is logged (naming the file and why) and the set searched exactly."""
    import logging
    import os

    from ml.ann import INDEX_FILE, Search
    from ml.embedding_store import read_unit_rows
    from ml.errors import DataError

    try:
        stamp = os.stat(Path(embedding_set.path) / INDEX_FILE).st_mtime_ns
    except FileNotFoundError:
        stamp = 0
    try:
        return _opened_search(embedding_set.pk, embedding_set.path, stamp)
    except DataError as exc:
        logging.getLogger(__name__).error("similarity search of %s falls back to exact: %s", embedding_set, exc)
        return Search(unit=read_unit_rows(embedding_set.path))


def similar_sources(source: Source, k: int = 12) -> list[tuple[Source, float]]:
    """The ``k`` sources nearest to ``source`` by cosine similarity of the active embeddings."""
    active = active_embeddings()
    if active is None:
        return []
    embedding_set, ids, matrix = active
    row = np.flatnonzero(ids == source.pk)
    if len(row) == 0:
        return []
    rows, scores = _similarity_search(embedding_set).search(matrix[row[0]], k, exclude=row)
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


def similar_to_fits(path: Path, k: int = 12) -> list[tuple[Source, float]]:
    """Sources most like an uploaded FITS cutout: preprocessed as at ingest, embedded by the active
    encoder in the query worker (``rgzlabel.science.query``)."""
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
    # The encoder runs in the query worker: no web process loads torch (docs: web memory).
    from rgzlabel.learning.dispatch import QueryUnanswered, ask_query_worker
    from rgzlabel.science.query import pack_pixels

    checkpoint = embedding_set.encoder.checkpoint_path
    if not os.path.exists(checkpoint):
        raise SearchError(f"the active encoder's checkpoint {checkpoint} cannot be read")
    pixels, shape = pack_pixels(cutout)
    timeout = float(settings.RGZ_QUERY_TIMEOUT_S)
    try:
        vector = ask_query_worker("rgzlabel.embed_query", [checkpoint, embedding_set.views, pixels, shape], timeout)
    except QueryUnanswered as exc:
        raise SearchError(f"the image could not be embedded: {exc}") from exc
    query = np.asarray(vector, dtype=np.float32)
    rows, scores = _similarity_search(embedding_set).search(query, k)
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


def catalogue_entry(source: Source, subject: Subject | None, workflow) -> Any:
    """The source's catalogue label (rgzlabel.science.catalogue), or None with no subject."""
    from rgzlabel.science.catalogue import SubjectState, catalogue_entries
    from rgzlabel.science.predictions import predict_sources

    if subject is None:
        return None
    state = SubjectState.of(subject)
    return catalogue_entries(workflow, [state], predict_sources([source.pk]))[source.pk]


def source_report(source: Source) -> dict[str, Any]:
    """Everything the source page shows; votes only as counts, never who cast them."""
    workflow = default_workflow()
    votes = Counter(Classification.objects.filter(source=source, is_gold=False).values_list("label", flat=True))
    subject = Subject.objects.filter(source=source, workflow=workflow).first()
    report: dict[str, Any] = {
        "source": source,
        "provenances": list(source.provenances.order_by("dataset")),
        "subject": subject,
        "catalogue": catalogue_entry(source, subject, workflow),
        "votes": votes.most_common(),
        "n_votes": sum(votes.values()),
        "vote_lead": lead(list(votes.elements())),
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
        "representation": active_representation(),
        "queue": queue_summary(workflow),
        "catalogue": catalogue_composition(subjects, active is not None),
        "consensus": consensus_status(workflow),
    }


def consensus_status(workflow) -> dict[str, Any]:
    """The last refit's snapshot, its class shares as percentages, and the prior's strength."""
    latest = ConsensusSnapshot.objects.filter(workflow=workflow).last()
    shares = (
        [(key, 100 * latest.class_counts.get(key, 0) / latest.n_retired) for key in workflow.class_keys]
        if latest is not None and latest.n_retired
        else []
    )
    return {"latest": latest, "shares": shares, "prior_strength": workflow.consensus_prior_strength}


def active_representation() -> str | None:
    """One sentence on the embeddings the queue, classifier, map and search use; None before any."""
    embedding_set = EmbeddingSet.objects.filter(is_active=True).select_related("encoder").first()
    if embedding_set is None:
        return None
    encoder = embedding_set.encoder
    if encoder is None:
        made = f"{embedding_set.get_method_display()} of the images"
    else:
        invariant = ", invariant to rotations and flips" if encoder.architecture == "p4m-resnet10" else ""
        made = f"encoder {encoder.name} ({encoder.architecture}{invariant}), {embedding_set.get_views_display()}"
    size = f"{embedding_set.dim} dimensions, {embedding_set.n_sources} sources"
    return f"Embeddings {embedding_set.pk} in use: {made}; {size}."


def catalogue_composition(subjects, with_classifier: bool) -> dict[str, int]:
    """How many sources' catalogue labels rest on what (rgzlabel.science.catalogue), in one query."""
    from django.db.models import Q

    from rgzlabel.labelling.services import MACHINE_ASSISTED_REASON

    retired, still_open = Q(retired_at__isnull=False), Q(retired_at__isnull=True)
    counts = subjects.aggregate(
        volunteers=Count("pk", filter=retired & ~Q(retire_reason=MACHINE_ASSISTED_REASON)),
        assisted=Count("pk", filter=retired & Q(retire_reason=MACHINE_ASSISTED_REASON)),
        voted=Count("pk", filter=still_open & Q(vote_count__gt=0)),
        unseen=Count("pk", filter=still_open & Q(vote_count=0)),
    )
    return {**counts, "with_classifier": with_classifier}


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
    from ml.policy_names import COLD_START_POLICY

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


#: Most points the campaign curve draws (older snapshots are thinned evenly).
CAMPAIGN_CURVE_POINTS = 400


def campaign_curve(workflow) -> list[ConsensusSnapshot]:
    """The workflow's consensus snapshots in order, thinned to :data:`CAMPAIGN_CURVE_POINTS` (the newest kept)."""
    ids = list(ConsensusSnapshot.objects.filter(workflow=workflow).values_list("id", flat=True))
    if len(ids) > CAMPAIGN_CURVE_POINTS:
        picks = np.unique(np.linspace(0, len(ids) - 1, CAMPAIGN_CURVE_POINTS).round().astype(int))
        ids = [ids[i] for i in picks]
    return list(ConsensusSnapshot.objects.filter(id__in=ids))


def campaign_plot(workflow) -> bytes:
    """The live campaign against its votes: the consensus's estimated accuracy, the volunteers' gold
    accuracy, and the share of each class among the retired subjects (a rare class must not vanish)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = campaign_curve(workflow)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.0), sharex=True)
    if points:
        votes = [p.n_votes for p in points]
        for name, values in (
            ("consensus, Dawid-Skene's own estimate", [p.estimated_accuracy for p in points]),
            ("volunteers on gold sources", [p.gold_accuracy for p in points]),
        ):
            shown = [(v, 100 * a) for v, a in zip(votes, values, strict=True) if a is not None]
            if shown:
                top.plot(*zip(*shown, strict=True), marker="." if len(shown) < 50 else None, label=name)
        for key in workflow.class_keys:
            shares = [100 * p.class_counts.get(key, 0) / p.n_retired if p.n_retired else 0 for p in points]
            bottom.plot(votes, shares, label=key)
        top.legend(loc="lower right", fontsize="small")
        bottom.legend(loc="upper right", fontsize="small", ncol=2)
    else:
        top.text(0.5, 0.5, "no consensus refit yet", ha="center", transform=top.transAxes)
    top.set_ylabel("accuracy (%)")
    top.set_title("The campaign against its votes")
    bottom.set_ylabel("% of retired sources")
    bottom.set_xlabel("volunteer votes (gold answers included)")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
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
    """The active embedding set's 2-D map with a colour value per point, as columns.

    The map is the index job's UMAP layout (:func:`ml.layout.build_map`, ``map_umap.npy`` in
    the set's folder): read here, never computed in a request. Until the job has made it, the
    first two principal components stand in (computed once per set and kept beside it as
    ``map_pca2.npy``), and the note says so and whether the UMAP map is on its way.

    Points come as parallel lists (4.8 MB of JSON at 100k points, 1.3 MB gzipped, where a
    list of objects would be 7.9 MB): ``ids``, ``names``, ``x``, ``y`` and ``values``, where a
    value is a number, None, or, with ``categories``, an index into that list of labels.

    Raises:
        ValueError: An unknown colouring.
    """
    if colour_by not in MAP_COLOURINGS:
        raise ValueError(f"unknown colouring {colour_by!r}: use consensus, prediction, uncertainty or size")
    active = active_embeddings()
    pretraining = pretraining_status()
    if active is None:
        note = f"The first embedding comes {pretraining['when']}." if pretraining else ""
        return {
            "method": None,
            "colour_by": colour_by,
            "note": note,
            "n_sources": 0,
            **_map_columns([], np.empty((0, 2)), {}, {}),
        }
    embedding_set, ids, matrix = active
    notes = []
    if embedding_set.encoder is None:
        later = pretraining["when"] if pretraining else "once an encoder is pretrained (a pretrain job at /jobs/)"
        notes.append(f"This is the cold-start embedding (pixel PCA); the encoder's map comes {later}.")
    coords, method, why_not_umap = _map_coordinates(embedding_set, matrix)
    if why_not_umap:
        notes.append(why_not_umap)
    rows = np.arange(len(ids))
    if len(rows) > MAP_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAP_POINTS, replace=False))
    chosen = np.asarray(ids[rows], dtype=np.int64)
    values = _map_values(chosen, colour_by, embedding_set)
    names = _source_names(chosen)  # for the hover, the keyboard walk and the table
    return {
        "method": method,
        "colour_by": colour_by,
        "embedding": embedding_set.encoder.name if embedding_set.encoder else "pixel PCA (cold start)",
        "note": " ".join(notes),
        "n_sources": len(ids),
        **_map_columns(chosen.tolist(), np.asarray(coords[rows]), values, names),
    }


#: The colourings of the map: consensus label, the active classifier's prediction and its
#: uncertainty (1 - top probability), angular size.
MAP_COLOURINGS = ("consensus", "prediction", "uncertainty", "size")


def _map_coordinates(embedding_set: EmbeddingSet, matrix: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(N x 2 coordinates, method for people, why the UMAP map is not shown or "")."""
    from ml.errors import ShapeMismatchError
    from ml.layout import read_map, read_map_info

    folder = Path(embedding_set.path)
    try:
        coords = read_map(folder)
    except ShapeMismatchError:
        coords, problem = None, "The stored UMAP map does not fit this embedding set: run its index job again."
    else:
        problem = ""
    if coords is not None:
        info = read_map_info(folder) or {}
        if info.get("method", "umap") == "umap":
            return coords, "UMAP", ""
        return coords, "PCA", f"PCA, not UMAP: {info.get('reason', 'the set is too small for UMAP')}."
    if not problem:
        job = _index_job_for(embedding_set)
        problem = (
            f"The UMAP map is being computed (index job #{job.pk}, {job.state}, {100 * job.progress:.0f} %); "
            "until it is ready this is the PCA projection."
            if job
            else "There is no UMAP map of this embedding yet: an index job makes it (an admin can start one "
            "at /jobs/); until then this is the PCA projection."
        )
    cache = folder / "map_pca2.npy"
    if cache.exists():
        return np.load(cache), "PCA", problem
    from sklearn.decomposition import PCA

    coords = PCA(n_components=2, random_state=0).fit_transform(matrix).astype(np.float32)
    partial = folder / f".map_pca2.{os.getpid()}.partial.npy"
    np.save(partial, coords)
    os.replace(partial, cache)  # whole or absent for another process reading it
    return coords, "PCA", problem


def _index_job_for(embedding_set: EmbeddingSet) -> Job | None:
    """The queued or running index job that will map this set (one without a set maps the active one)."""
    for job in Job.objects.filter(kind=Job.Kind.INDEX, state__in=Job.ACTIVE_STATES).order_by("created_at"):
        if (job.params or {}).get("embedding_set") in (None, "", embedding_set.pk, str(embedding_set.pk)):
            return job
    return None


def _map_columns(ids: list[int], coords: np.ndarray, values: dict[int, Any], names: dict[int, str]) -> dict[str, Any]:
    """The points as parallel lists; coordinates rounded to 1/10,000 of the map's extent."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    extent = float(np.ptp(coords, axis=0).max()) if len(coords) else 0.0
    decimals = int(max(0, 4 - np.floor(np.log10(extent)))) if extent > 0 else 4
    coords = np.round(coords, decimals)
    column = [values.get(i) for i in ids]
    labels = sorted({v for v in column if isinstance(v, str)})
    if labels:  # a label per point as an index into the categories: a fraction of the bytes
        index = {label: n for n, label in enumerate(labels)}
        column = [index[v] if isinstance(v, str) else None for v in column]
    return {
        "count": len(ids),
        "ids": ids,
        "names": [names.get(i, "") for i in ids],
        "x": coords[:, 0].tolist(),
        "y": coords[:, 1].tolist(),
        "values": column,
        "categories": labels or None,
    }


#: Above this many ids a lookup reads the whole table rather than an IN list of the ids
#: (SQLite refuses more than 32,766 parameters; the table is about the size of the map).
_IN_LIST_MAX = 5_000


def _source_names(source_ids: np.ndarray) -> dict[int, str]:
    sources = Source.objects.all()
    if len(source_ids) <= _IN_LIST_MAX:
        sources = sources.filter(pk__in=source_ids.tolist())
    return dict(sources.values_list("pk", "name"))


def _map_values(source_ids: np.ndarray, colour_by: str, embedding_set: EmbeddingSet) -> dict[int, Any]:
    few = len(source_ids) <= _IN_LIST_MAX
    if colour_by == "consensus":
        subjects = Subject.objects.filter(workflow=default_workflow()).exclude(consensus_label="")
        if few:
            subjects = subjects.filter(source_id__in=source_ids.tolist())
        return dict(subjects.values_list("source_id", "consensus_label"))
    if colour_by == "size":
        sized = Source.objects.filter(angular_size_arcsec__isnull=False)
        if few:
            sized = sized.filter(pk__in=source_ids.tolist())
        return {pk: round(size, 2) for pk, size in sized.values_list("pk", "angular_size_arcsec") if size is not None}
    if colour_by in {"prediction", "uncertainty"}:
        from rgzlabel.science.predictions import predict_sources

        classifier = ClassifierVersion.objects.filter(is_active=True, embedding_set=embedding_set).first()
        scored = predict_sources(source_ids.tolist(), classifier) if classifier else None
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

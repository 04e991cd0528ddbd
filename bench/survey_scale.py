"""Survey scale: a whole campaign at 10k and 100k sources, measured step by step in one table.

For each size (``--sizes``) a fresh database (PostgreSQL by default) and data folder get a
realistic campaign built from real pixels, then every step the product runs on it is timed:

1. **Sources.** The real cutouts available on a fresh machine (the 2158 FIRST images of the
   ``firstgalaxydata`` package, plus MiraBest's 1256 from ``--shared`` when present), each
   survey source one of them under a random rotation and flip, scaled to a random peak flux and
   given fresh Gaussian noise at FIRST's rms (0.15 mJy/beam), placed at its own position in the
   FIRST footprint (at least 30 arcsec from any other, so nothing is cross-matched). The first
   ``--fits`` (10k) are written as FITS files with a celestial WCS and ingested with
   ``manage.py ingest`` (serial, one process); the rest go through the product's ingest service
   (``rgzlabel.catalog.services.ingest_records``: the same records ``read_fits_records`` would
   make from those files, preprocessed by ``ml.preprocess.preprocess`` in a helper process, so
   the same rows and checks, without writing 90k files). At sizes above ``--fits`` the bulk load
   comes first, so the FITS ingest measures ingesting into a catalogue of that size.
2. **Votes.** ``--volunteers`` simulated volunteers (``ml.crowd``: skill, per-class difficulty,
   ambiguity, heavy-tailed activity) give about 10 votes per source: the workflow retires after
   12 votes, 70 % of the subjects are retired with 12 and the rest are open with 0-11; 40 gold
   sources; each volunteer answers a few gold sources; 20 % of the voted subjects were served by
   exploration. Rows are bulk-inserted (``COPY`` on PostgreSQL) with counts, majority consensus
   and retirement as ``record_classification`` leaves them (``ml.consensus.majority``,
   ``retirement_reason``); the Dawid-Skene columns come from the product's own
   ``recompute_consensus``, which is the first measured step after loading.
3. **The loop**, each step a job run through the jobs machinery (``create_job`` + ``run_job``,
   in its own process, as a worker runs it): pixel-PCA embedding, the cold-start queue refresh,
   an encoder embedding (the ``cpu-quick`` architecture, randomly initialised unless
   ``--checkpoint``: the time does not depend on the weights) with centre views, and with
   dihedral views up to ``--dihedral-max`` sources (above it the figure is the smaller size's,
   extrapolated linearly), retraining, the queue refresh with the classifier, and the index job
   when the product has one.
4. **The web** (gunicorn with production settings, as many synchronous workers as
   ``gunicorn.conf.py`` gives this machine): ``next`` + vote latency of volunteers with long
   histories (``bench.load_labelling.Volunteer``), pages for scientists (first request and
   p50 / p95 of the next ones), the exports of all sources and all votes in CSV, VOTable and
   FITS (time, size, and the serving process's peak RSS), and each web process's RSS and PSS
   (``/proc/<pid>/smaps_rollup``) after the pages and after the exports.

Each in-process step runs in a fresh process, so its peak RSS (``VmHWM``; helper processes
apart) is its own, and is stopped after ``--step-minutes``: a step over the limit is reported as such.
The table puts the sizes side by side with the growth from the smallest to the largest size,
flagging anything that grows faster than linearly (and per-request costs that grow with N).

    .venv/bin/python -m bench.survey_scale --sizes 10000 --out var/survey_scale
    .venv/bin/python -m bench.survey_scale --sizes 10000,100000 --out var/survey_scale --reuse

Loopback only; every process it starts is stopped when it ends. Each size's database is
dropped and its data folder deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

from bench import markdown_table, write_section
from bench.load_labelling import Tally, Volunteer, loopback_production_env, start_server

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Survey scale (issue 18)"
DATE = "2026-12-05"
MACHINE = "2-core shared machine (no GPU, 24 GB)"
MIB = 2**20

#: FIRST's typical rms (Jy/beam) and pixel scale; the cutouts' side in pixels.
FIRST_RMS_JY = 1.5e-4
PIXEL_SCALE_ARCSEC = 1.8
CUTOUT = 150
#: Peak fluxes of the survey's sources are log-uniform in this range (Jy/beam).
PEAK_FLUX_JY = (3e-3, 3e-1)
#: The FIRST footprint, roughly: the northern cap and the southern equatorial strip
#: (RA from, RA to, Dec from, Dec to, degrees; RA may run past 360).
FOOTPRINT = ((105.0, 255.0, -8.0, 65.0), (315.0, 405.0, -11.0, 2.0))
#: Far beyond the ingest's cross-match radius (10 arcsec): every survey source stays its own.
MIN_SEPARATION_ARCSEC = 30.0

#: The workflow's classes, and what each catalogue label is for the simulated volunteers
#: (as the field guide maps them: compact and bent sources are "not sure / other").
CLASSES = ("FRI", "FRII", "hybrid", "unsure")
TRUTH_OF = {"FRI": "FRI", "FRII": "FRII", "hybrid": "hybrid", "compact": "unsure", "bent": "unsure"}
#: Error multiplier per class for the volunteers (as bench.campaign: FRI and hybrids are hard).
DIFFICULTY = (1.3, 0.7, 1.5, 1.0)
RETIRE_AFTER = 12
#: Share of the (non-gold) subjects still open, with 0 to RETIRE_AFTER - 1 votes.
OPEN_SHARE = 0.3
#: Share of the voted subjects served by random exploration (the workflow's default).
EXPLORE_SHARE = 0.2
N_GOLD = 40
CAMPAIGN_DAYS = 90
#: Sources per bulk-ingest progress line.
PROGRESS_EVERY = 5000

#: (dataset, format) of every export measured.
EXPORTS = [(d, f) for d in ("sources", "classifications") for f in ("csv", "votable", "fits")]
EXPORT_EXTENSION = {"csv": "csv", "votable": "vot", "fits": "fits"}


# --- the survey's sources: real pixels, new orientations, fresh noise, own positions ---------------


def load_base_images(shared: Path | None) -> dict[str, np.ndarray]:
    """The real cutouts a fresh machine has, as uint8 (N, 300, 300) with their true class.

    The Griese et al. FIRST images (300x300) of the installed ``firstgalaxydata`` package, and
    MiraBest's (150x150, padded with zeros to 300) when ``shared`` holds it. Blank images are
    left out. ``ambiguous`` marks MiraBest's "uncertain" sources and hybrids.
    """
    from ml.datasets import read_griese, read_mirabest

    images, truth, ambiguous, origin = [], [], [], []
    for record in read_griese(cutout_size=300):
        if record.image.any() and record.label in TRUTH_OF:
            images.append(record.image)
            truth.append(CLASSES.index(TRUTH_OF[record.label]))
            ambiguous.append(False)
            origin.append(0)
    mirabest = shared / "mirabest" / "MiraBest_F_batches.tar.gz" if shared is not None else None
    if mirabest is not None and mirabest.is_file():
        for record in read_mirabest(mirabest):
            if record.image.any() and record.label in TRUTH_OF:
                images.append(np.pad(record.image, 75))
                truth.append(CLASSES.index(TRUTH_OF[record.label]))
                ambiguous.append(record.extra["confidence"] == "uncertain" or record.label == "hybrid")
                origin.append(1)
    return {
        "images": np.stack(images),
        "truth": np.array(truth, dtype=np.int8),
        "ambiguous": np.array(ambiguous, dtype=bool),
        "origin": np.array(origin, dtype=np.int8),  # 0: firstgalaxydata, 1: MiraBest
    }


def footprint_positions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions spread uniformly over ``FOOTPRINT``, each ``MIN_SEPARATION_ARCSEC`` from the rest.

    Each position is drawn from its own seed, and of two positions too close the later one is
    drawn again, so the first ``m`` positions of a plan of ``n`` are the plan of ``m``: the sizes
    of one run share their sources.

    Returns:
        (ra_deg, dec_deg), float64, RA in [0, 360).
    """
    from scipy.spatial import cKDTree

    sin_dec = np.array([(math.sin(math.radians(d0)), math.sin(math.radians(d1))) for _, _, d0, d1 in FOOTPRINT])
    ra_bounds = np.array([(r0, r1) for r0, r1, _, _ in FOOTPRINT])
    areas = (ra_bounds[:, 1] - ra_bounds[:, 0]) * (sin_dec[:, 1] - sin_dec[:, 0])
    cumulative = np.cumsum(areas / areas.sum())

    def draw(indices: np.ndarray, attempt: int) -> tuple[np.ndarray, np.ndarray]:
        uniform = np.array([np.random.default_rng([seed, 1, int(i), attempt]).random(3) for i in indices])
        region = np.minimum(np.searchsorted(cumulative, uniform[:, 0]), len(FOOTPRINT) - 1)
        ra = ra_bounds[region, 0] + uniform[:, 1] * (ra_bounds[region, 1] - ra_bounds[region, 0])
        dec = np.degrees(np.arcsin(sin_dec[region, 0] + uniform[:, 2] * (sin_dec[region, 1] - sin_dec[region, 0])))
        return np.round(ra % 360.0, 6) % 360.0, np.round(dec, 6)

    ra, dec = draw(np.arange(n), 0)
    chord = 2 * math.sin(math.radians(MIN_SEPARATION_ARCSEC / 3600) / 2)
    for attempt in range(1, 100):
        rad_ra, rad_dec = np.radians(ra), np.radians(dec)
        xyz = np.stack([np.cos(rad_dec) * np.cos(rad_ra), np.cos(rad_dec) * np.sin(rad_ra), np.sin(rad_dec)], axis=1)
        pairs = cKDTree(xyz).query_pairs(chord, output_type="ndarray")
        if len(pairs) == 0:
            return ra, dec
        again = np.unique(pairs.max(axis=1))  # the later of each close pair moves
        ra[again], dec[again] = draw(again, attempt)
    raise RuntimeError("could not place the sources apart")


def survey_image(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new FIRST-like image (Jy/beam, float32, 150x150) of one real cutout (uint8, 300x300).

    Rotated by a uniform angle (about the centre, bilinear), flipped with probability 1/2,
    scaled to a log-uniform peak flux, with fresh noise at ``FIRST_RMS_JY``.
    """
    from scipy import ndimage

    # The central 216 pixels cover a 150-pixel cutout at any angle (150 * sqrt 2 = 212).
    centre = base[42:258, 42:258].astype(np.float32) / 255.0
    rotated = ndimage.rotate(centre, rng.uniform(0.0, 360.0), reshape=False, order=1, prefilter=False)
    if rng.random() < 0.5:
        rotated = rotated[:, ::-1]
    peak = math.exp(rng.uniform(math.log(PEAK_FLUX_JY[0]), math.log(PEAK_FLUX_JY[1])))
    image = rotated[33:183, 33:183] * np.float32(peak)
    image += rng.normal(0.0, FIRST_RMS_JY, image.shape).astype(np.float32)
    return np.ascontiguousarray(image, dtype=np.float32)


def fits_header(ra_deg: float, dec_deg: float, name: str):  # -> astropy.io.fits.Header
    """A FIRST cutout's header: SIN projection centred on the source, 1.8 arcsec pixels, Jy/beam."""
    from astropy.io import fits

    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CRVAL1"], header["CRVAL2"] = ra_deg, dec_deg
    header["CRPIX1"] = header["CRPIX2"] = (CUTOUT + 1) / 2
    header["CDELT1"], header["CDELT2"] = -PIXEL_SCALE_ARCSEC / 3600, PIXEL_SCALE_ARCSEC / 3600
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    header["RADESYS"], header["EQUINOX"] = "FK5", 2000.0
    header["BUNIT"] = "JY/BEAM"
    header["BMAJ"] = header["BMIN"] = 5.4 / 3600
    header["OBJECT"], header["SURVEY"] = name, "FIRST"
    return header


@dataclass(frozen=True)
class Survey:
    """The planned sources: position, which real cutout each shows, and their names."""

    ra: np.ndarray
    dec: np.ndarray
    base: np.ndarray  # index into the base images
    seed: int

    def rng(self, index: int) -> np.random.Generator:
        """Source ``index``'s own draws (orientation, flux, noise): the same at every size."""
        return np.random.default_rng([self.seed, 2, index])

    @classmethod
    def load(cls, path: Path) -> Survey:
        data = np.load(path)
        return cls(data["ra"], data["dec"], data["base"], int(data["seed"]))


def file_name(source_name: str) -> str:
    """``FIRST J104512.3+302010`` -> ``FIRST_J104512.3+302010.fits``."""
    return source_name.replace(" ", "_") + ".fits"


# Set in each helper process by _init_worker: the base images (memory-mapped) and the plan.
_WORKER: dict[str, Any] = {}


def _init_worker(base_path: str, survey_path: str) -> None:
    _WORKER["images"] = np.load(base_path, mmap_mode="r")
    _WORKER["survey"] = Survey.load(Path(survey_path))


def _write_fits(task: tuple[int, str]) -> int:
    """Helper process: write survey source ``index`` as a FITS file; its size in bytes."""
    from astropy.io import fits

    index, path = task
    survey: Survey = _WORKER["survey"]
    image = survey_image(_WORKER["images"][survey.base[index]], survey.rng(index))
    name = Path(path).name.removesuffix(".fits").replace("_", " ")
    header = fits_header(float(survey.ra[index]), float(survey.dec[index]), name)
    fits.PrimaryHDU(image, header=header).writeto(path, overwrite=True)
    return Path(path).stat().st_size


def _preprocessed(index: int) -> tuple[int, np.ndarray]:
    """Helper process: survey source ``index`` preprocessed as the FITS ingest would (uint8 cutout)."""
    from ml.preprocess import preprocess

    survey: Survey = _WORKER["survey"]
    image = survey_image(_WORKER["images"][survey.base[index]], survey.rng(index))
    return index, preprocess(image, PIXEL_SCALE_ARCSEC, overwrite_input=True)


# --- steps: each runs in its own process (``--step NAME --context FILE``) ------------------------


class StepFailed(RuntimeError):
    """A measured step could not finish; the message says why."""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def step_names(context: dict[str, Any]) -> dict[str, Any]:
    """Names of the survey's sources: index -> file name (what the ingest keys provenances by)."""
    from rgzlabel.catalog.services import position_name

    survey = Survey.load(Path(context["survey"]))
    names = {
        str(i): file_name(position_name(float(survey.ra[i]), float(survey.dec[i]))) for i in range(context["size"])
    }
    return {"names": names}


def step_setup(context: dict[str, Any]) -> dict[str, Any]:
    """Migrate the fresh database and collect the static files (as ``bin/start`` and docker compose do:
    production settings serve them from a manifest); the workflow retires after RETIRE_AFTER votes."""
    from django.core.management import call_command

    from rgzlabel.labelling.services import default_workflow

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    workflow = default_workflow()
    workflow.retire_after, workflow.retire_on_margin = RETIRE_AFTER, 0  # a fixed count, as the rows it writes
    workflow.save(update_fields=["retire_after", "retire_on_margin"])
    return {"seconds": time.perf_counter() - started}


def step_write_fits(context: dict[str, Any]) -> dict[str, Any]:
    """Write the FITS files (bench preparation, not a product step), two helper processes."""
    import multiprocessing

    folder = Path(context["fits_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    names = json.loads(Path(context["names"]).read_text())
    tasks = [(i, str(folder / names[str(i)])) for i in range(context["n_fits"])]
    tasks = [task for task in tasks if not Path(task[1]).exists()]
    started = time.perf_counter()
    total = 0
    if tasks:
        pool_context = multiprocessing.get_context("spawn")
        with pool_context.Pool(2, _init_worker, (context["base"], context["survey"])) as pool:
            total = sum(pool.imap_unordered(_write_fits, tasks, chunksize=64))
    return {"seconds": time.perf_counter() - started, "items": len(tasks), "bytes": total}


def step_bulk(context: dict[str, Any]) -> dict[str, Any]:
    """Ingest the sources past the FITS files through ``ingest_records`` (the product's service)."""
    import multiprocessing

    from ml.datasets import SourceRecord
    from rgzlabel.catalog.services import ingest_records
    from rgzlabel.learning.ingest import sync_subjects_after_ingest

    survey = Survey.load(Path(context["survey"]))
    names = json.loads(Path(context["names"]).read_text())
    indices = range(context["n_fits"], context["size"])
    rss_before = rss_mib()
    started = time.perf_counter()
    cpu = time.process_time()
    progress = {"last": 0}

    def preprocessed(pool) -> Any:
        # Two windows in flight at most: Pool.imap queues results without bound when the helper
        # runs ahead of the ingest, which would put the bench's own backlog in the peak RSS.
        windows = [range(a, min(a + 2000, indices.stop)) for a in range(indices.start, indices.stop, 2000)]
        pending = pool.imap(_preprocessed, windows[0], chunksize=64) if windows else iter(())
        for k in range(len(windows)):
            current = pending
            if k + 1 < len(windows):
                pending = pool.imap(_preprocessed, windows[k + 1], chunksize=64)
            yield from current

    def records(pool) -> Any:
        for index, cutout in preprocessed(pool):
            # What read_fits_records makes of the file (no path: the file is never written).
            yield SourceRecord(
                name=names[str(index)].removesuffix(".fits"),
                ra_deg=float(survey.ra[index]),
                dec_deg=float(survey.dec[index]),
                image=cutout,
                dataset="fits",
                extra={"external_id": names[str(index)], "path": "", "unit": "JY/BEAM",
                       "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC, "hdu": 0, "warnings": []},
            )  # fmt: skip

    def on_record(report: Any) -> None:
        if report.total - progress["last"] >= PROGRESS_EVERY:
            progress["last"] = report.total
            rate = report.total / (time.perf_counter() - started)
            print(f"  bulk: {report.total}/{len(indices)} ({rate:.0f}/s)", flush=True)

    pool_context = multiprocessing.get_context("spawn")
    with pool_context.Pool(context["generators"], _init_worker, (context["base"], context["survey"])) as pool:
        report = ingest_records(records(pool), on_record=on_record)
    ingest_s = time.perf_counter() - started
    subjects = sync_subjects_after_ingest()
    seconds = time.perf_counter() - started
    if report.failed:
        raise StepFailed(f"{report.failed} records failed, e.g. {report.errors[:3]}")
    return {
        "seconds": seconds,
        "ingest_seconds": ingest_s,
        "items": report.ingested,
        "main_cpu_s": time.process_time() - cpu,
        "subjects": subjects,
        "rss_before_mib": rss_before,
        "summary": report.summary(),
    }


def step_votes(context: dict[str, Any]) -> dict[str, Any]:
    """Volunteers, gold sources and ~10 votes per source, bulk-inserted; subjects as voting leaves them."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction
    from django.utils import timezone

    from ml.consensus import majority
    from ml.crowd import CrowdConfig, make_crowd
    from rgzlabel.catalog.models import Provenance
    from rgzlabel.labelling.models import Classification, GoldLabel, Subject, VolunteerProfile
    from rgzlabel.labelling.services import GOLD_FEEDBACK, default_workflow, retirement_reason

    rss_before = rss_mib()
    started = time.perf_counter()
    rng = np.random.default_rng([context["seed"], 3])
    workflow = default_workflow()
    base = np.load(context["base_meta"])
    survey = Survey.load(Path(context["survey"]))
    index_of = {name: int(i) for i, name in json.loads(Path(context["names"]).read_text()).items()}
    # Source id -> its survey index, through the provenance the ingest keyed by file name.
    rows = Provenance.objects.filter(dataset="fits").values_list("source_id", "external_id")
    source_ids = np.array([r[0] for r in rows], dtype=np.int64)
    survey_index = np.array([index_of[r[1]] for r in rows], dtype=np.int64)
    if len(source_ids) != context["size"]:
        raise StepFailed(f"expected {context['size']} ingested sources, found {len(source_ids)}")
    truth = base["truth"][survey.base[survey_index]].astype(np.int64)
    ambiguous = base["ambiguous"][survey.base[survey_index]]

    # Gold: N_GOLD sources of the three morphology classes, as an admin would choose them.
    gold_rows = []
    for k in range(3):
        # Hybrids are ambiguous by nature (MiraBest's are the only ones): any will do.
        candidates = np.flatnonzero((truth == k) & (~ambiguous | (CLASSES[k] == "hybrid")))
        gold_rows += list(rng.choice(candidates, size=min(len(candidates), N_GOLD // 3 + (k == 0)), replace=False))
    gold_rows = np.array(sorted(gold_rows), dtype=np.int64)
    for row in gold_rows:
        label = CLASSES[truth[row]]
        GoldLabel.objects.create(
            workflow=workflow, source_id=int(source_ids[row]), label=label, feedback=GOLD_FEEDBACK.get(label, "")
        )
    voted = np.setdiff1d(np.arange(len(source_ids)), gold_rows)

    # Votes per subject: RETIRE_AFTER for the retired, 0..RETIRE_AFTER-1 for the open ones.
    n_votes = np.full(len(voted), RETIRE_AFTER, dtype=np.int64)
    open_rows = rng.random(len(voted)) < OPEN_SHARE
    n_votes[open_rows] = rng.integers(0, RETIRE_AFTER, int(open_rows.sum()))
    crowd = make_crowd(
        CrowdConfig(n_volunteers=context["volunteers"], class_difficulty=DIFFICULTY, sources_range=(5, 5000)),
        len(CLASSES),
        context["seed"],
    )
    weights = np.log(crowd.quotas.astype(np.float64))
    volunteer_of_vote = np.empty(int(n_votes.sum()), dtype=np.int64)
    subject_of_vote = np.repeat(voted, n_votes)
    # Each subject's voters: distinct, drawn in proportion to their activity (Gumbel top-k).
    offsets = np.concatenate([[0], np.cumsum(n_votes)])
    for start in range(0, len(voted), 2000):
        stop = min(start + 2000, len(voted))
        keys = weights[None, :] + rng.gumbel(size=(stop - start, len(weights)))
        top = np.argpartition(-keys, RETIRE_AFTER - 1, axis=1)[:, :RETIRE_AFTER]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        for j in range(start, stop):
            volunteer_of_vote[offsets[j] : offsets[j + 1]] = top[j - start, : n_votes[j]]
    answers = sample_answers(crowd, volunteer_of_vote, truth[subject_of_vote], ambiguous[subject_of_vote], rng)

    # When: each subject first served at a uniform time of the campaign, its votes after that.
    now = timezone.now()
    campaign_s = CAMPAIGN_DAYS * 86400.0
    first = rng.uniform(0, campaign_s - 3600, len(voted))
    vote_s = np.repeat(first, n_votes) + rng.random(len(subject_of_vote)) * np.repeat(campaign_s - first, n_votes)
    order = np.lexsort((vote_s, subject_of_vote))
    subject_of_vote, volunteer_of_vote = subject_of_vote[order], volunteer_of_vote[order]
    answers, vote_s = answers[order], vote_s[order]
    t0 = now - timedelta(seconds=campaign_s)
    explored_rows = rng.random(len(voted)) < EXPLORE_SHARE
    explored_rows &= n_votes > 0
    first_vote = np.zeros(len(subject_of_vote), dtype=bool)
    first_vote[offsets[:-1][n_votes > 0]] = True
    explore_vote = first_vote & np.repeat(explored_rows, n_votes)

    # Gold answers: each volunteer answers a few gold sources (3 % of their votes plus 2, at most 40).
    per_volunteer = np.bincount(volunteer_of_vote, minlength=len(weights))
    gold_volunteers, gold_sources = [], []
    for volunteer, count in enumerate(per_volunteer):
        answered = min(len(gold_rows), 2 + count * 3 // 100)
        gold_volunteers += [volunteer] * answered
        gold_sources += list(rng.choice(gold_rows, size=answered, replace=False))
    gold_volunteers_a, gold_sources_a = np.array(gold_volunteers), np.array(gold_sources)
    gold_answers = sample_answers(
        crowd, gold_volunteers_a, truth[gold_sources_a], np.zeros(len(gold_sources_a), dtype=bool), rng
    )
    gold_s = rng.uniform(0, campaign_s, len(gold_sources_a))
    simulated_s = time.perf_counter() - started

    # Volunteers and their profiles (gold record included).
    write_started = time.perf_counter()
    User = get_user_model()
    unusable = make_password(None)
    users = User.objects.bulk_create(
        [User(username=f"volunteer-{i:05d}", password=unusable) for i in range(len(weights))], batch_size=2000
    )
    user_ids = np.array([u.pk for u in users], dtype=np.int64)
    correct = np.bincount(gold_volunteers_a, weights=gold_answers == truth[gold_sources_a], minlength=len(weights))
    answered_gold = np.bincount(gold_volunteers_a, minlength=len(weights))
    VolunteerProfile.objects.bulk_create(
        [
            VolunteerProfile(
                user_id=int(user_ids[i]), gold_answered=int(answered_gold[i]), gold_correct=int(correct[i])
            )
            for i in range(len(weights))
        ],
        batch_size=2000,
    )
    workflow_id = workflow.pk
    columns = ("volunteer_id", "source_id", "workflow_id", "label", "is_gold", "explore", "created_at")
    adapt = connection.ops.adapt_datetimefield_value

    def when(seconds: float) -> Any:
        return adapt(t0 + timedelta(seconds=float(seconds)))

    vote_rows = (
        (int(user_ids[v]), int(source_ids[s]), workflow_id, CLASSES[a], False, bool(e), when(t))
        for v, s, a, e, t in zip(volunteer_of_vote, subject_of_vote, answers, explore_vote, vote_s, strict=True)
    )
    gold_vote_rows = (
        (int(user_ids[v]), int(source_ids[s]), workflow_id, CLASSES[a], True, False, when(t))
        for v, s, a, t in zip(gold_volunteers_a, gold_sources_a, gold_answers, gold_s, strict=True)
    )
    insert_rows(Classification._meta.db_table, columns, vote_rows)
    insert_rows(Classification._meta.db_table, columns, gold_vote_rows)

    # Subjects as _count_vote leaves them after their last vote.
    subject_rows = []
    labels_of = [CLASSES[a] for a in answers]
    for j, row in enumerate(voted):
        labels = labels_of[offsets[j] : offsets[j + 1]]
        if not labels:
            continue
        label, share = majority(labels)
        reason = retirement_reason(workflow, labels)
        retired_at = when(vote_s[offsets[j] + RETIRE_AFTER - 1]) if reason else None
        subject_rows.append(
            (int(source_ids[row]), len(labels), label, share, retired_at, reason, bool(explored_rows[j]))
        )
    update_subjects(workflow_id, subject_rows, Subject._meta.db_table)
    write_s = time.perf_counter() - write_started
    with transaction.atomic():
        n_stored = Classification.objects.count()
    return {
        "seconds": time.perf_counter() - started,
        "simulate_seconds": simulated_s,
        "write_seconds": write_s,
        "items": n_stored,
        "votes": int(len(subject_of_vote)),
        "gold_votes": int(len(gold_sources_a)),
        "volunteers": int(len(weights)),
        "retired": int(sum(1 for r in subject_rows if r[4] is not None)),
        "explored": int(explored_rows.sum()),
        "gold": int(len(gold_rows)),
        "rss_before_mib": rss_before,
        "method": "COPY" if connection.vendor == "postgresql" else "executemany",
    }


def sample_answers(
    crowd: Any, volunteers: np.ndarray, truth: np.ndarray, ambiguous: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Each vote's answer (class index) from its volunteer's confusion row (no skips: skips are no votes)."""
    answers = np.empty(len(volunteers), dtype=np.int64)
    for start in range(0, len(volunteers), 200_000):
        part = slice(start, start + 200_000)
        rows = crowd.confusions[volunteers[part], ambiguous[part].astype(np.int64), truth[part]]
        cumulative = np.cumsum(rows, axis=1)
        draws = rng.random(len(rows))[:, None]
        answers[part] = np.minimum((draws > cumulative).sum(axis=1), len(CLASSES) - 1)
    return answers


def insert_rows(table: str, columns: Sequence[str], rows: Any, chunk: int = 100_000) -> None:
    """Insert rows: ``COPY`` on PostgreSQL, batched ``executemany`` elsewhere, in chunks."""
    from itertools import islice

    from django.db import connection, transaction

    iterator = iter(rows)
    while batch := list(islice(iterator, chunk)):
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    raw = cursor.cursor  # psycopg's own cursor, for COPY
                    with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in batch:
                            copy.write_row(row)
            else:
                placeholders = ", ".join(["%s"] * len(columns))
                with connection.cursor() as cursor:
                    cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", batch)


def update_subjects(workflow_id: int, rows: list[tuple], table: str) -> None:
    """Write (source id, vote count, majority, share, retired at, reason, explored) into the subjects."""
    from django.db import connection, transaction

    fields = ("vote_count", "consensus_label", "consensus_confidence", "retired_at", "retire_reason", "explored")
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE TEMP TABLE bench_subject (source_id bigint, vote_count integer, consensus_label text, "
                "consensus_confidence double precision, retired_at timestamptz, retire_reason text, explored boolean) "
                "ON COMMIT DROP"
            )
            with cursor.cursor.copy("COPY bench_subject FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            assignments = ", ".join(f"{f} = b.{f}" for f in fields)
            cursor.execute(
                f"UPDATE {table} s SET {assignments}, updated_at = now() FROM bench_subject b "
                "WHERE s.workflow_id = %s AND s.source_id = b.source_id",
                [workflow_id],
            )
        else:
            assignments = ", ".join(f"{f} = %s" for f in fields)
            cursor.executemany(
                f"UPDATE {table} SET {assignments} WHERE workflow_id = %s AND source_id = %s",
                [(*row[1:], workflow_id, row[0]) for row in rows],
            )


def run_product_job(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Create a job and run it here, as a worker would (``run_job``); its result, or StepFailed."""
    from rgzlabel.learning.jobs import create_job

    job = create_job(kind, params)
    return run_existing_job(job.pk)


def run_existing_job(job_id: int) -> dict[str, Any]:
    """Run a queued job here; a job handed off in chunks (``rgzlabel.learning.chunks``) has its
    chunks run here too, one after another, as a single worker on its queue would run them."""
    from rgzlabel.learning.jobs import run_job
    from rgzlabel.learning.models import Job

    outcome = run_job(job_id)
    chunks = 0
    if outcome.get("handed_off"):
        from rgzlabel.learning.chunks import run_chunk
        from rgzlabel.learning.models import JobChunk

        for chunk_id in JobChunk.objects.filter(job_id=job_id).order_by("index").values_list("pk", flat=True):
            answer = run_chunk(chunk_id)
            chunks += 1
            if answer.get("state") not in ("succeeded", None) or answer.get("job_failed"):
                raise StepFailed(f"chunk {chunk_id} of job {job_id}: {answer}")
    job = Job.objects.get(pk=job_id)
    if job.state != Job.State.SUCCEEDED:
        raise StepFailed(f"{job.kind} job {job.pk} {job.state}: {job.error}")
    return {**job.result, "chunks_run_here": chunks}


def timed_job(kind: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rss_before = rss_mib()
    started = time.perf_counter()
    result = run_product_job(kind, params)
    return {"seconds": time.perf_counter() - started, "rss_before_mib": rss_before, "result": result, **extra}


def step_consensus(context: dict[str, Any]) -> dict[str, Any]:
    """The product's Dawid-Skene refit over every vote (``recompute_consensus``)."""
    from rgzlabel.labelling.services import default_workflow, recompute_consensus

    rss_before = rss_mib()
    started = time.perf_counter()
    report = recompute_consensus(default_workflow())
    return {
        "seconds": time.perf_counter() - started,
        "rss_before_mib": rss_before,
        "items": report.subjects,
        "volunteers": report.volunteers,
        "changed": report.changed,
    }


def step_embed_pca(context: dict[str, Any]) -> dict[str, Any]:
    return timed_job("embed", {"method": "pca", "chain": False}, items=context["size"])


def step_refresh_cold(context: dict[str, Any]) -> dict[str, Any]:
    """The queue refresh before any classifier (the cold-start policy on the PCA embedding)."""
    return timed_job("refresh", {})


def _encoder_version() -> int:
    """The benchmark's EncoderVersion: ``--checkpoint``, or a randomly initialised cpu-quick encoder."""
    from django.conf import settings

    from ml.checkpoint import save_checkpoint
    from ml.config import config_to_dict, get_config
    from ml.encoder import build_encoder
    from rgzlabel.catalog.models import Cutout
    from rgzlabel.learning.models import EncoderVersion

    existing = EncoderVersion.objects.filter(name__startswith="survey-scale").first()
    if existing is not None:
        return existing.pk
    checkpoint = os.environ.get("SURVEY_SCALE_CHECKPOINT")
    if checkpoint:
        path, name = Path(checkpoint).resolve(), f"survey-scale {Path(checkpoint).name}"
        config: dict[str, Any] = {"checkpoint": str(path)}
    else:
        encoder_config = get_config("cpu-quick").encoder
        path = save_checkpoint(
            Path(settings.DATA_DIR) / "encoders" / "random-cpu-quick.pt", build_encoder(encoder_config, 0)
        )
        name, config = "survey-scale random cpu-quick", {"encoder": config_to_dict(encoder_config), "random": True}
    return EncoderVersion.objects.create(
        name=name, architecture="resnet18", config=config, checkpoint_path=str(path), n_images=Cutout.objects.count()
    ).pk


def step_embed_centre(context: dict[str, Any]) -> dict[str, Any]:
    encoder = _encoder_version()
    return timed_job("embed", {"method": "encoder", "encoder": encoder, "views": "centre", "chain": False},
                     items=context["size"])  # fmt: skip


def step_embed_dihedral(context: dict[str, Any]) -> dict[str, Any]:
    """Dihedral views; afterwards the centre-view set is made active again (outside the timing)."""
    from rgzlabel.learning.embedding import activate_embedding_set
    from rgzlabel.learning.models import EmbeddingSet

    centre = EmbeddingSet.objects.filter(is_active=True).first()
    encoder = _encoder_version()
    measured = timed_job("embed", {"method": "encoder", "encoder": encoder, "views": "dihedral", "chain": False},
                         items=context["size"])  # fmt: skip
    if centre is not None:
        activate_embedding_set(centre)
    return measured


def step_retrain(context: dict[str, Any]) -> dict[str, Any]:
    measured = timed_job("retrain", {})
    measured["items"] = measured["result"].get("metrics", {}).get("n_eval")
    return measured


def step_refresh(context: dict[str, Any]) -> dict[str, Any]:
    """The refresh the retrain queued: the workflow's policy with the classifier."""
    from rgzlabel.learning.models import Job

    queued = Job.objects.filter(kind=Job.Kind.REFRESH, state=Job.State.QUEUED).order_by("pk").first()
    rss_before = rss_mib()
    started = time.perf_counter()
    result = run_existing_job(queued.pk) if queued is not None else run_product_job("refresh", {})
    return {"seconds": time.perf_counter() - started, "rss_before_mib": rss_before, "result": result}


def step_index(context: dict[str, Any]) -> dict[str, Any]:
    """The index job (map and search index of the active set), when the product has one."""
    from rgzlabel.learning.jobs import SERVICES
    from rgzlabel.learning.models import Job

    if "index" not in Job.Kind.values or "index" not in SERVICES:
        raise StepFailed("the product has no index job")
    return timed_job("index", {})


def step_sessions(context: dict[str, Any]) -> dict[str, Any]:
    """Sessions for volunteers with long histories and for a scientist; sources for the pages."""
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from bench.load_labelling import session_keys
    from rgzlabel.catalog.models import Source
    from rgzlabel.learning.models import EmbeddingSet

    User = get_user_model()
    active = list(
        User.objects.filter(username__startswith="volunteer-")
        .annotate(n=Count("classifications"))
        .order_by("-n")
        .values_list("pk", "n")
    )
    rng = np.random.default_rng([context["seed"], 4])
    # Across the activity distribution: the busiest volunteers and a random draw of the rest.
    chosen = [pk for pk, _ in active[:2]]
    chosen += [
        active[i][0] for i in rng.choice(np.arange(2, len(active)), context["web_volunteers"] - 2, replace=False)
    ]
    volunteers = list(User.objects.filter(pk__in=chosen))
    scientist = User.objects.filter(username="survey-scale-scientist").first() or User.objects.create_user(
        "survey-scale-scientist", is_staff=True
    )
    sample = rng.choice(Source.objects.count(), 50, replace=False)
    ids = list(Source.objects.order_by("pk").values_list("pk", "ra_deg", "dec_deg"))
    active_set = EmbeddingSet.objects.filter(is_active=True).first()
    return {
        "active_set": active_set.method if active_set is not None else None,
        "volunteers": session_keys(volunteers),
        "volunteer_votes": [n for pk, n in active if pk in set(chosen)],
        "scientist": session_keys([scientist])[0],
        "sources": [ids[i] for i in sample],
    }


def step_export(context: dict[str, Any]) -> dict[str, Any]:
    """One export written in-process (when the server could not answer it): time and peak memory."""
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.science import exports
    from rgzlabel.science.queries import SourceFilters, find_sources

    dataset, file_format = context["export"]
    rss_before = rss_mib()
    started = time.perf_counter()
    workflow = default_workflow()
    export = (
        exports.export_sources(find_sources(workflow, SourceFilters()), workflow)
        if dataset == "sources"
        else exports.export_classifications()
    )
    size = 0
    if file_format == "csv":
        for piece in exports.iter_csv(export):
            size += len(piece.encode())
    else:
        with exports.write_table(export, file_format) as handle:
            size = handle.seek(0, os.SEEK_END)
    return {"seconds": time.perf_counter() - started, "bytes": size, "rss_before_mib": rss_before}


def step_stale_jobs(context: dict[str, Any]) -> dict[str, Any]:
    """Fail the jobs a stopped step left queued or running: they would block singleton kinds for good."""
    from django.utils import timezone

    from rgzlabel.learning.models import Job

    stale = Job.objects.filter(state__in=Job.ACTIVE_STATES).update(
        state=Job.State.FAILED, error="stopped by bench.survey_scale (over its limit, or the run was interrupted)",
        finished_at=timezone.now(),
    )  # fmt: skip
    return {"jobs": stale}


def step_database_size(context: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            return {"bytes": int(cursor.fetchone()[0])}
    return {"bytes": Path(settings.DATABASES["default"]["NAME"]).stat().st_size}


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "names": step_names,
    "setup": step_setup,
    "write_fits": step_write_fits,
    "bulk": step_bulk,
    "votes": step_votes,
    "consensus": step_consensus,
    "embed_pca": step_embed_pca,
    "refresh_cold": step_refresh_cold,
    "embed_centre": step_embed_centre,
    "embed_dihedral": step_embed_dihedral,
    "retrain": step_retrain,
    "refresh": step_refresh,
    "index": step_index,
    "sessions": step_sessions,
    "export": step_export,
    "database_size": step_database_size,
    "stale_jobs": step_stale_jobs,
}


def run_step_here(name: str, context_path: Path) -> None:
    """The child's side: set Django up, run one step, write its result (or its error) as JSON."""
    import traceback

    import django

    context = json.loads(context_path.read_text())
    django.setup()
    try:
        result = {"ok": True, **STEPS[name](context)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which carries on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result["own_peak_rss_mib"] = peak_rss_mib(os.getpid())  # exact, where the parent's polling may miss the end
    Path(context["result"]).write_text(json.dumps(result, default=str))


# --- the parent: running steps in child processes, with limits -------------------------------------


@dataclass
class Run:
    """One size's campaign: its database, folders, environment and what was measured."""

    size: int
    args: argparse.Namespace
    work: Path
    results: dict[str, Any] = field(default_factory=dict)
    #: Continuing an interrupted run (``--resume``): its database and finished steps are kept.
    resuming: bool = False

    @property
    def sqlite(self) -> bool:
        return not self.args.database_url.startswith("postgres")

    @property
    def database_url(self) -> str:
        if self.sqlite:
            return ""
        parts = urlsplit(self.args.database_url)
        return parts._replace(path=f"{parts.path.rstrip('/')}_{self.size}").geturl()

    @property
    def data_dir(self) -> Path:
        return self.work / f"data-{self.size}"

    @property
    def n_fits(self) -> int:
        return min(self.args.fits, self.size)

    def env(self) -> dict[str, str]:
        env = loopback_production_env(
            self.database_url,
            RGZ_DATA_DIR=str(self.data_dir),
            DJANGO_SETTINGS_MODULE="rgzlabel.settings",
            TQDM_DISABLE="1",
            PYTHONUNBUFFERED="1",
        )
        # The file-system broker in the run's data folder: jobs are run here, never by a worker.
        for key in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "RGZ_SESSION_CACHE_URL"):
            env.pop(key, None)
        if self.sqlite:
            env.pop("DATABASE_URL", None)
        if self.args.checkpoint:
            env["SURVEY_SCALE_CHECKPOINT"] = str(self.args.checkpoint.resolve())
        return env

    def context(self, **extra: Any) -> dict[str, Any]:
        return {
            "size": self.size,
            "n_fits": self.n_fits,
            "seed": self.args.seed,
            "volunteers": self.args.volunteers,
            "web_volunteers": self.args.web_volunteers,
            "generators": self.args.generators,
            "base": str(self.work / "base_images.npy"),
            "base_meta": str(self.work / "base_meta.npz"),
            "survey": str(self.work / "survey.npz"),
            "names": str(self.work / "names.json"),
            "fits_folder": str(self.work / "fits"),
            **extra,
        }


def peak_rss_mib(pid: int) -> float | None:
    """A process's peak RSS so far (``VmHWM``, MiB): its own, reset when it execs; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(
    command: list[str], env: dict[str, str], timeout_s: float, log_path: Path
) -> tuple[int | None, dict[str, float], float]:
    """Run ``command`` in its own session with a time limit; (exit status or None if stopped, usage, wall s).

    Usage: CPU seconds from ``wait4`` (the process and its helper processes), and peak RSS
    polled from ``VmHWM`` every 0.2 s for the process and, apart, for its helpers. Not
    ``ru_maxrss``: a child starts with its parent's, so it would report at least this process's peak.
    """
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    deadline = started + timeout_s
    peaks = {"peak_rss_mib": 0.0, "helpers_peak_rss_mib": 0.0}
    try:
        status, usage = _wait_polling(process, deadline, peaks)
    except BaseException:  # the bench itself is stopped: so is the step, with its helpers
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    process.returncode = status if status is not None else -9
    return status, {"cpu_s": usage.ru_utime + usage.ru_stime, **peaks}, time.monotonic() - started


def _wait_polling(process: subprocess.Popen, deadline: float, peaks: dict[str, float]) -> tuple[int | None, Any]:
    """Wait for ``process``, polling its and its helpers' peak RSS; stop it at ``deadline`` (status None)."""
    import psutil

    while True:
        try:
            helpers = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        except psutil.Error:
            helpers = []
        for key, pids in (("peak_rss_mib", [process.pid]), ("helpers_peak_rss_mib", helpers)):
            for pid in pids:
                peaks[key] = max(peaks[key], peak_rss_mib(pid) or 0.0)
        pid, wait_status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(wait_status), usage
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the step and its helpers
            time.sleep(2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            _, _, usage = os.wait4(process.pid, 0)
            return None, usage
        time.sleep(0.2)


def step(
    run: Run, name: str, *, key: str | None = None, limit_s: float | None = None, cache: bool = True, **extra: Any
) -> dict[str, Any]:
    """Run step ``name`` of ``run`` in a child process; its result with wall time, CPU and peak RSS.

    With ``--resume`` a step that has a result already (finished, or stopped at its limit) is not
    run again (``cache=False``: always run).
    """
    key = key or name
    steps = run.work / "steps"
    steps.mkdir(exist_ok=True)
    result_path = steps / f"{run.size}-{key}.json"
    if run.resuming and cache and result_path.exists():
        run.results[key] = json.loads(result_path.read_text())
        print(f"[{run.size}] {key}: reusing the result of the interrupted run", flush=True)
        return run.results[key]
    result_path.unlink(missing_ok=True)
    context_path = steps / f"{run.size}-{key}.context.json"
    context_path.write_text(json.dumps(run.context(result=str(result_path), **extra)))
    limit_s = limit_s or run.args.step_minutes * 60
    print(f"[{run.size}] {key} ...", flush=True)
    status, usage, wall = run_child(
        [sys.executable, "-m", "bench.survey_scale", "--step", name, "--context", str(context_path)],
        run.env(),
        limit_s,
        run.work / "logs" / f"{run.size}-{key}.log",
    )
    if status is None:
        result = {"ok": False, "error": f"stopped: over the limit of {limit_s / 60:.0f} min", "over_limit": True}
    elif result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        result = {"ok": False, "error": f"the step's process exited with {status} and no result (see its log)"}
    result.update(wall_s=wall, **usage)
    result["peak_rss_mib"] = max(usage["peak_rss_mib"], result.get("own_peak_rss_mib") or 0.0)
    result_path.write_text(json.dumps(result, default=str))
    run.results[key] = result
    if status is None:
        step(run, "stale_jobs", key=f"stale_jobs-after-{key}", cache=False)
    shown = f"{result.get('seconds', wall):.1f} s, peak RSS {usage['peak_rss_mib']:.0f} MiB"
    print(f"[{run.size}] {key}: {shown}" if result["ok"] else f"[{run.size}] {key} FAILED: {result['error']}",
          flush=True)  # fmt: skip
    return result


def ingest_fits(run: Run) -> dict[str, Any]:
    """``manage.py ingest`` of the FITS files (serial): files/s of wall time and per CPU-second."""
    saved = run.work / "steps" / f"{run.size}-ingest_fits.json"
    if run.resuming and saved.exists():
        run.results["ingest_fits"] = json.loads(saved.read_text())
        print(f"[{run.size}] ingest_fits: reusing the result of the interrupted run", flush=True)
        return run.results["ingest_fits"]
    folder = run.work / "fits"
    files = sorted(folder.glob("*.fits"))[: run.n_fits] if run.n_fits < len(list(folder.glob("*.fits"))) else None
    if files is not None:
        # Fewer files than written: a folder of links to the ones this size uses.
        subset = run.work / f"fits-{run.size}"
        shutil.rmtree(subset, ignore_errors=True)
        subset.mkdir()
        names = json.loads((run.work / "names.json").read_text())
        for i in range(run.n_fits):
            (subset / names[str(i)]).symlink_to(folder / names[str(i)])
        folder = subset
    print(f"[{run.size}] ingest_fits ({run.n_fits} files) ...", flush=True)
    status, usage, wall = run_child(
        [sys.executable, "manage.py", "ingest", str(folder), "-v", "1"],
        run.env(),
        run.args.step_minutes * 60,
        run.work / "logs" / f"{run.size}-ingest_fits.log",
    )
    ok = status == 0
    result = {
        "ok": ok,
        "seconds": wall,
        "items": run.n_fits,
        "wall_s": wall,
        **usage,
        "files_per_s": run.n_fits / wall,
        "files_per_cpu_s": run.n_fits / max(usage["cpu_s"], 1e-9),
    }
    if not ok:
        result["error"] = "stopped: over the limit" if status is None else f"manage.py ingest exited with {status}"
    run.results["ingest_fits"] = result
    saved.write_text(json.dumps(result))
    print(f"[{run.size}] ingest_fits: {wall:.1f} s, {result['files_per_s']:.0f} files/s, "
          f"{result['files_per_cpu_s']:.0f} per CPU-s" + ("" if ok else f" FAILED: {result['error']}"),
          flush=True)  # fmt: skip
    return result


def prepare(args: argparse.Namespace, work: Path) -> None:
    """Base images, the survey plan (positions for the largest size) and the FITS files, once."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    largest = max(args.size_list)
    plan = work / "survey.npz"
    if not (work / "base_images.npy").exists():
        print("reading the real cutouts ...", flush=True)
        base = load_base_images(args.shared)
        np.save(work / "base_images.npy", base.pop("images"))
        np.savez(work / "base_meta.npz", **base)
    meta = np.load(work / "base_meta.npz")
    if not plan.exists() or len(np.load(plan)["ra"]) < largest or int(np.load(plan)["seed"]) != args.seed:
        # Plans are prefix-stable (see footprint_positions): a longer plan keeps the files written.
        if plan.exists() and int(np.load(plan)["seed"]) != args.seed:
            (work / "names.json").unlink(missing_ok=True)
            shutil.rmtree(work / "fits", ignore_errors=True)
        ra, dec = footprint_positions(largest, args.seed)
        bases = np.random.default_rng([args.seed, 5]).integers(0, len(meta["truth"]), largest)
        np.savez(plan, ra=ra, dec=dec, base=bases, seed=args.seed)
    counts = np.bincount(meta["origin"], minlength=2)
    print(f"{len(meta['truth'])} real cutouts ({counts[0]} firstgalaxydata, {counts[1]} MiraBest); "
          f"survey plan of {largest} positions", flush=True)  # fmt: skip


def prepare_files(run: Run) -> dict[str, Any] | None:
    """Names of the plan's sources, then the FITS files not written yet."""
    names = run.work / "names.json"
    if not names.exists() or len(json.loads(names.read_text())) < run.size:
        plan_run = Run(max(run.args.size_list), run.args, run.work)
        result_path = run.work / "steps" / "names.result.json"
        context = plan_run.context(result=str(result_path))
        path = run.work / "steps" / "names.context.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(context))
        status, _, _ = run_child([sys.executable, "-m", "bench.survey_scale", "--step", "names", "--context",
                                  str(path)], run.env(), 600, run.work / "logs" / "names.log")  # fmt: skip
        result = json.loads(result_path.read_text()) if result_path.exists() else {"error": f"exit status {status}"}
        if status != 0 or not result.get("ok"):
            raise RuntimeError(f"naming the sources failed: {result.get('error')}")
        names.write_text(json.dumps(result["names"]))
    return step(run, "write_fits", limit_s=3600)


# --- the web ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    seconds: float
    nbytes: int
    headers: dict[str, str]


class Client:
    """A logged-in browser on one keep-alive connection (session and CSRF cookies)."""

    def __init__(self, port: int, session: str, timeout_s: float):
        self.port, self.timeout_s = port, timeout_s
        self.csrf = secrets.token_hex(16)
        self.cookie = f"sessionid={session}; csrftoken={self.csrf}"
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Answer:
        headers = {"Cookie": self.cookie, "X-CSRFToken": self.csrf, "Referer": f"http://127.0.0.1:{self.port}/"}
        if content_type:
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            size = 0
            while piece := response.read(MIB):
                size += len(piece)
            return Answer(response.status, time.perf_counter() - started, size, dict(response.getheaders()))
        except (OSError, http.client.HTTPException) as exc:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
            return Answer(0, time.perf_counter() - started, 0, {"error": f"{type(exc).__name__}: {exc}"})


def multipart(field_name: str, path: Path) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{path.name}"\r\n'
            "Content-Type: application/fits\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def web_workers(server: subprocess.Popen) -> list[int]:
    import psutil

    return sorted(child.pid for child in psutil.Process(server.pid).children())


def process_memory(pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) from ``/proc/<pid>/smaps_rollup``; the peak RSS (VmHWM) from status."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:"):
            values[parts[0][:-1].lower() + "_mib"] = int(parts[1]) / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            values["peak_rss_mib"] = int(line.split()[1]) / 1024
    return values


def reset_peak(pids: list[int]) -> None:
    """Reset each process's peak RSS (``VmHWM``), so the next peak is that of what follows."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None}
    p50, p95 = np.percentile(np.array(values) * 1000, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95)}


def measure_web(run: Run, sessions: dict[str, Any]) -> dict[str, Any]:
    """Pages, next + vote, exports and web memory through gunicorn with production settings."""
    args = run.args
    log = open(run.work / "logs" / f"{run.size}-gunicorn.log", "ab")  # noqa: SIM115 - closed below
    env = run.env()
    server = start_server(run.database_url, args.port, args.web_workers, 1, env=env, log=log)  # type: ignore[arg-type]
    # Search by image's encoder runs in the query worker (as bin/start and docker compose run it).
    query_worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "query", "-P", "solo", "-n",
         f"survey-scale-query-{os.getpid()}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=ROOT, env={**env, "RGZ_TORCH_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    web: dict[str, Any] = {"workers": args.web_workers}
    try:
        pids = web_workers(server)
        web["pages"] = measure_pages(run, sessions, on_search=lambda: web.update(memory_before_search={
            str(pid): process_memory(pid) for pid in web_workers(server)}))  # fmt: skip
        web["labelling"] = measure_labelling(args, sessions)
        web["memory_after_pages"] = {str(pid): process_memory(pid) for pid in pids}
        web["exports"] = measure_exports(run, sessions, server)
        pids = web_workers(server)  # a worker killed by its timeout was replaced
        web["memory_after_exports"] = {str(pid): process_memory(pid) for pid in pids}
        web["query_worker_memory"] = process_memory(query_worker.pid)
    finally:
        query_worker.terminate()
        try:
            query_worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            query_worker.kill()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    text = (run.work / "logs" / f"{run.size}-gunicorn.log").read_text(errors="replace")
    web["worker_timeouts"] = text.count("WORKER TIMEOUT")
    return web


def measure_pages(run: Run, sessions: dict[str, Any], on_search: Callable[[], None]) -> dict[str, Any]:
    """Each page: the first request (cold caches) and p50 / p95 of ``--page-repeats`` more.

    ``on_search`` is called before the first search by image (whose encoder runs in the query worker).
    """
    args = run.args
    client = Client(args.port, sessions["scientist"], args.request_timeout)
    sources = sessions["sources"]
    fits_file = sorted((run.work / "fits").glob("*.fits"))[0]
    search_body, search_type = multipart("fits", fits_file)
    pages: list[tuple[str, Callable[[int], tuple[str, str, bytes | None, str | None]]]] = [
        ("home", lambda i: ("GET", "/", None, None)),
        ("dashboard", lambda i: ("GET", "/science/", None, None)),
        ("dashboard accuracy plot", lambda i: ("GET", "/science/plots/accuracy.png", None, None)),
        ("source page", lambda i: ("GET", f"/science/sources/{sources[i % len(sources)][0]}/", None, None)),
        ("map page", lambda i: ("GET", "/science/map/", None, None)),
        ("map data (consensus)", lambda i: ("GET", "/science/map.json?colour=consensus", None, None)),
        ("API sources, first page", lambda i: ("GET", "/api/sources/", None, None)),
        ("API sources, cone 10 arcmin", lambda i: ("GET", "/api/sources/?" + urlencode(
            {"ra": sources[i % len(sources)][1], "dec": sources[i % len(sources)][2], "radius": 600}), None, None)),
        ("search by image (POST FITS)", lambda i: ("POST", "/science/search/", search_body, search_type)),
    ]  # fmt: skip
    results = {}
    for name, make in pages:
        if name.startswith("search"):
            if sessions.get("active_set") != "encoder":
                reason = f"not measured: the active embedding set is {sessions.get('active_set')}, not an encoder's"
                results[name] = {"requests": 0, "errors": 1, "error": reason, "first_ms": None, "skipped": True}
                print(f"[{run.size}] page {name}: {reason}", flush=True)
                continue
            on_search()
        answers = []
        for i in range(args.page_repeats + 1):
            method, path, body, content_type = make(i)
            answers.append(client.request(method, path, body, content_type))
            if answers[-1].status != 200:
                break
        bad = [a for a in answers if a.status != 200]
        results[name] = {
            "first_ms": answers[0].seconds * 1000,
            **percentiles([a.seconds for a in answers[1:] if a.status == 200]),
            "requests": len(answers),
            "bytes": answers[0].nbytes,
            "errors": len(bad),
            "error": f"status {bad[0].status} {bad[0].headers.get('error', '')}".strip() if bad else None,
        }
        shown = f"first {results[name]['first_ms']:.0f} ms, p50 {results[name]['p50_ms'] or 0:.0f} ms"
        print(f"[{run.size}] page {name}: {shown}" + (f"; {results[name]['error']}" if bad else ""), flush=True)
    return results


def measure_labelling(args: argparse.Namespace, sessions: dict[str, Any]) -> dict[str, Any]:
    """``next`` + vote, closed loop, by volunteers with long histories (bench.load_labelling)."""
    tally = Tally()
    deadline = time.monotonic() + args.labelling_seconds
    started = time.monotonic()
    threads = [
        threading.Thread(target=Volunteer(args.port, key, tally, seed=i).run, args=(deadline,))
        for i, key in enumerate(sessions["volunteers"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    result: dict[str, Any] = {"volunteers": len(threads), "seconds": elapsed, "votes": tally.created_votes,
                              "votes_per_s": tally.created_votes / elapsed,
                              "their_votes": sessions["volunteer_votes"]}  # fmt: skip
    for endpoint in ("next", "vote"):
        result[endpoint] = {**percentiles(tally.latencies[endpoint]), "requests": len(tally.latencies[endpoint]),
                            "errors": tally.errors[endpoint]}  # fmt: skip
    print(f"[{args.current_size}] next p50 {result['next']['p50_ms'] or 0:.0f} ms, vote p50 "
          f"{result['vote']['p50_ms'] or 0:.0f} ms, {result['votes_per_s']:.0f} votes/s", flush=True)  # fmt: skip
    return result


def measure_exports(run: Run, sessions: dict[str, Any], server: subprocess.Popen) -> dict[str, Any]:
    """Each export once: time, size, streamed or not, and the serving process's peak RSS."""
    results = {}
    for dataset, file_format in EXPORTS:
        pids = web_workers(server)
        before = {pid: process_memory(pid) for pid in pids}
        reset_peak(pids)
        client = Client(run.args.port, sessions["scientist"], run.args.request_timeout)
        answer = client.request("GET", f"/science/exports/{dataset}.{EXPORT_EXTENSION[file_format]}")
        after = {}
        for pid in pids:
            try:
                after[pid] = process_memory(pid)
            except OSError:  # the serving worker was killed (its timeout) and is gone
                after[pid] = {"peak_rss_mib": float("nan"), "rss_mib": float("nan")}
        growth = {pid: after[pid]["peak_rss_mib"] - before[pid]["rss_mib"] for pid in pids}
        serving = max(pids, key=lambda pid: -1 if math.isnan(growth[pid]) else growth[pid])
        key = f"{dataset}.{file_format}"
        results[key] = {
            "ok": answer.status == 200,
            "status": answer.status,
            "seconds": answer.seconds,
            "bytes": answer.nbytes,
            "streamed": "Content-Length" not in answer.headers and answer.status == 200,
            "serving_peak_rss_mib": after[serving]["peak_rss_mib"],
            "serving_growth_mib": growth[serving],
            "serving_rss_before_mib": before[serving]["rss_mib"],
            "error": None if answer.status == 200 else f"status {answer.status} {answer.headers.get('error', '')}",
        }
        print(f"[{run.size}] export {key}: {answer.seconds:.1f} s, {answer.nbytes / MIB:.1f} MiB, peak RSS "
              f"{results[key]['serving_peak_rss_mib']:.0f} MiB" + ("" if answer.status == 200 else
              f" FAILED: {results[key]['error']}"), flush=True)  # fmt: skip
    return results


# --- one size, and the summary ------------------------------------------------------------------------


def reset_database(run: Run) -> None:
    if run.sqlite:
        return
    import psycopg

    name = urlsplit(run.database_url).path.lstrip("/")
    admin_url = run.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(run: Run) -> None:
    if run.sqlite:
        return
    import psycopg

    name = urlsplit(run.database_url).path.lstrip("/")
    admin_url = run.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_size(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every step at one size, on a fresh database and data folder (or those of an interrupted run)."""
    run = Run(args.current_size, args, work)
    run.resuming = args.resume and (run.data_dir / "interrupted").exists()
    if run.resuming:
        print(f"[{run.size}] resuming the interrupted run", flush=True)
        step(run, "stale_jobs", key="stale_jobs-on-resume", cache=False)
    else:
        shutil.rmtree(run.data_dir, ignore_errors=True)
        run.data_dir.mkdir(parents=True)
        reset_database(run)
    started = time.monotonic()
    try:
        prepare_files(run)
        if not step(run, "setup")["ok"]:
            raise RuntimeError(f"setup failed: {run.results['setup']['error']}")
        # Above the FITS files, the bulk load first: the FITS ingest then runs into a catalogue of this size.
        if run.size > run.n_fits:
            step(run, "bulk", limit_s=args.bulk_minutes * 60)
        ingest_fits(run)
        # The cold start ranks the pool before any vote, as at a campaign's start (with labels and no
        # classifier its k-means would take one cluster per label: the product retrains instead).
        chain = [
            ("embed_pca", None),
            ("refresh_cold", "embed_pca"),
            ("votes", None),
            ("consensus", "votes"),
            ("embed_centre", None),
            ("embed_dihedral", "embed_centre"),
            ("retrain", "embed_centre"),
            ("refresh", "retrain"),
            ("index", "embed_centre"),
            ("sessions", "votes"),
        ]
        for name, needs in chain:
            if needs is not None and not run.results.get(needs, {}).get("ok"):
                run.results[name] = {"ok": False, "error": f"not run: {needs} failed"}
                continue
            if name == "embed_dihedral" and run.size > args.dihedral_max:
                run.results[name] = {"ok": False, "skipped": True,
                                     "error": f"not run above --dihedral-max {args.dihedral_max}"}  # fmt: skip
                continue
            step(run, name)
        if run.results["sessions"]["ok"]:
            run.results["web"] = measure_web(run, run.results["sessions"])
            for key, export in run.results["web"]["exports"].items():
                if not export["ok"]:  # what the export costs when nothing stops it
                    dataset, file_format = key.split(".")
                    export["in_process"] = step(run, "export", key=f"export-{key}", export=[dataset, file_format])
        run.results["database_size"] = step(run, "database_size", cache=False)
        sessions = run.results.get("sessions", {})
        for secret in ("volunteers", "scientist"):  # session keys: no use once the database is gone
            sessions.pop(secret, None)
    except BaseException:
        # Interrupted (or broken): the database and the finished steps stay for --resume.
        (run.data_dir / "interrupted").touch()
        print(f"[{run.size}] stopped: database and data folder kept; --resume continues from here", flush=True)
        raise
    run.results["total_s"] = time.monotonic() - started
    (run.data_dir / "interrupted").unlink(missing_ok=True)
    if not args.keep:
        drop_database(run)
        shutil.rmtree(run.data_dir, ignore_errors=True)
    return run.results


@dataclass(frozen=True)
class Metric:
    """One row of the table: where its value is in a size's results, and how it should grow.

    ``kind``: ``total`` (a whole step's time or memory: at most linear in N), ``per_item``
    (per request or per source: flat), ``rate`` (items per second: flat), ``info``.
    """

    name: str
    unit: str
    kind: str
    get: Callable[[dict[str, Any]], Any]
    #: For a pair of values (p50 / p95, peak / growth): which one the growth column compares.
    pick: int = 0


def _ok(result: dict[str, Any] | None, key: str) -> Any:
    if not result:
        return None
    if not result.get("ok", True):
        return Failure(result.get("error", "failed"))
    return result.get(key)


@dataclass(frozen=True)
class Failure:
    reason: str


def _step(name: str, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda results: _ok(results.get(name), key)


def _page(name: str, key: str) -> Callable[[dict[str, Any]], Any]:
    def get(results: dict[str, Any]) -> Any:
        page = results.get("web", {}).get("pages", {}).get(name)
        if page is None:
            return None
        if page.get("skipped") or (page["errors"] and key != "first_ms"):
            return Failure(page["error"])
        return page.get(key)

    return get


def _export(key: str, field_name: str) -> Callable[[dict[str, Any]], Any]:
    def get(results: dict[str, Any]) -> Any:
        export = results.get("web", {}).get("exports", {}).get(key)
        if export is None:
            return None
        if export["ok"]:
            return export.get(field_name)
        inner = export.get("in_process") or {}
        if field_name == "seconds" and inner.get("ok"):
            return Failure(f"{export['error']} over HTTP; in-process {inner['seconds']:.0f} s")
        if field_name == "serving_peak_rss_mib" and inner.get("ok"):
            return Failure(f"in-process peak RSS {inner['peak_rss_mib']:.0f} MiB")
        return Failure(export["error"])

    return get


def _memory(when: str, key: str) -> Callable[[dict[str, Any]], Any]:
    def get(results: dict[str, Any]) -> Any:
        memory = results.get("web", {}).get(when)
        return max(v[key] for v in memory.values()) if memory else None

    return get


def metrics() -> list[Metric]:
    rows = [
        Metric(
            "FITS ingest (manage.py ingest, serial): files/s", "files/s", "rate", _step("ingest_fits", "files_per_s")
        ),
        Metric(
            "FITS ingest: files per CPU-second of the ingest process",
            "files/CPU-s",
            "rate",
            _step("ingest_fits", "files_per_cpu_s"),
        ),
        Metric("FITS ingest: peak RSS", "MiB", "total", _step("ingest_fits", "peak_rss_mib")),
        Metric("bulk ingest (ingest_records), rest of the sources: time", "s", "total", _step("bulk", "seconds")),
        Metric("bulk ingest: peak RSS", "MiB", "total", _step("bulk", "peak_rss_mib")),
        Metric(
            "bulk ingest: peak RSS of the preprocessing helper", "MiB", "total", _step("bulk", "helpers_peak_rss_mib")
        ),
        Metric("votes bulk load (volunteers, gold, votes, subjects): time", "s", "total", _step("votes", "seconds")),
        Metric("votes stored", "votes", "info", _step("votes", "items")),
        Metric("votes bulk load: peak RSS", "MiB", "total", _step("votes", "peak_rss_mib")),
        Metric(
            "Dawid-Skene refit over all votes (recompute_consensus): time", "s", "total", _step("consensus", "seconds")
        ),
        Metric("Dawid-Skene refit: peak RSS", "MiB", "total", _step("consensus", "peak_rss_mib")),
        Metric("embed job, pixel PCA: time", "s", "total", _step("embed_pca", "seconds")),
        Metric("embed job, pixel PCA: peak RSS", "MiB", "total", _step("embed_pca", "peak_rss_mib")),
        Metric("queue refresh, cold start (PCA, no classifier): time", "s", "total", _step("refresh_cold", "seconds")),
        Metric("queue refresh, cold start: peak RSS", "MiB", "total", _step("refresh_cold", "peak_rss_mib")),
        Metric("embed job, encoder, centre view: time", "s", "total", _step("embed_centre", "seconds")),
        Metric("embed job, encoder, centre view: peak RSS", "MiB", "total", _step("embed_centre", "peak_rss_mib")),
        Metric("embed job, encoder, dihedral views: time", "s", "total", _dihedral_seconds),
        Metric("embed job, encoder, dihedral views: peak RSS", "MiB", "total", _step("embed_dihedral", "peak_rss_mib")),
        Metric("retrain job (classifier on all consensus labels): time", "s", "total", _step("retrain", "seconds")),
        Metric("retrain job: peak RSS", "MiB", "total", _step("retrain", "peak_rss_mib")),
        Metric(
            "queue refresh with the classifier (workflow's policy): time", "s", "total", _step("refresh", "seconds")
        ),
        Metric("queue refresh with the classifier: peak RSS", "MiB", "total", _step("refresh", "peak_rss_mib")),
        Metric("index job (map + search index): time", "s", "total", _step("index", "seconds")),
        Metric("index job: peak RSS", "MiB", "total", _step("index", "peak_rss_mib")),
    ]
    for endpoint in ("next", "vote"):
        for p in ("p50_ms", "p95_ms"):
            rows.append(
                Metric(
                    f"labelling `{endpoint}` {p[:3]}",
                    "ms",
                    "per_item",
                    lambda r, e=endpoint, p=p: r.get("web", {}).get("labelling", {}).get(e, {}).get(p),
                )
            )
    rows.append(Metric("labelling throughput (closed loop)", "votes/s", "rate",
                       lambda r: r.get("web", {}).get("labelling", {}).get("votes_per_s")))  # fmt: skip
    for page in ("home", "dashboard", "dashboard accuracy plot", "source page", "map page", "map data (consensus)",
                 "search by image (POST FITS)", "API sources, first page", "API sources, cone 10 arcmin"):  # fmt: skip
        rows.append(Metric(f"page {page}: first request", "ms", "per_item", _page(page, "first_ms")))
        rows.append(
            Metric(f"page {page}: p50 / p95", "ms", "per_item", _pair(_page(page, "p50_ms"), _page(page, "p95_ms")))
        )
    for dataset, file_format in EXPORTS:
        key = f"{dataset}.{file_format}"
        rows.append(Metric(f"export {key}: time", "s", "total", _export(key, "seconds")))
        rows.append(Metric(f"export {key}: size", "MiB", "total", _scaled(_export(key, "bytes"), 1 / MIB)))
        rows.append(
            Metric(
                f"export {key}: serving process peak RSS / growth over its RSS before",
                "MiB",
                "total",
                _pair(_export(key, "serving_peak_rss_mib"), _export(key, "serving_growth_mib")),
                pick=1,
            )
        )
    rows += [
        Metric(
            "web process RSS before the first search by image (largest)",
            "MiB",
            "total",
            _memory("memory_before_search", "rss_mib"),
        ),
        Metric("web process RSS after the pages (largest)", "MiB", "total", _memory("memory_after_pages", "rss_mib")),
        Metric("web process PSS after the pages (largest)", "MiB", "total", _memory("memory_after_pages", "pss_mib")),
        Metric(
            "web process RSS after the exports (largest)", "MiB", "total", _memory("memory_after_exports", "rss_mib")
        ),
        Metric(
            "web process PSS after the exports (largest)", "MiB", "total", _memory("memory_after_exports", "pss_mib")
        ),
        Metric("query worker RSS (search by image's encoder)", "MiB", "total", _query_worker("rss_mib")),
        Metric("database size", "MiB", "total", _scaled(_step("database_size", "bytes"), 1 / MIB)),
    ]
    return rows


def _query_worker(key: str) -> Callable[[dict[str, Any]], Any]:
    def get(results: dict[str, Any]) -> Any:
        return results.get("web", {}).get("query_worker_memory", {}).get(key)

    return get


def _pair(first: Callable, second: Callable) -> Callable[[dict[str, Any]], Any]:
    def get(results: dict[str, Any]) -> Any:
        a, b = first(results), second(results)
        if isinstance(a, Failure) or a is None:
            return a
        return (a, b)

    return get


def _scaled(get: Callable, factor: float) -> Callable[[dict[str, Any]], Any]:
    def scaled(results: dict[str, Any]) -> Any:
        value = get(results)
        return value * factor if isinstance(value, int | float) else value

    return scaled


def extrapolate_dihedral(by_size: dict[int, dict[str, Any]]) -> None:
    """A size whose dihedral embedding was not run gets the largest measured size's time, scaled linearly."""
    measured = {n: r["embed_dihedral"] for n, r in by_size.items() if r.get("embed_dihedral", {}).get("ok")}
    if not measured:
        return
    reference = max(measured)
    for size, results in by_size.items():
        if results.get("embed_dihedral", {}).get("skipped"):
            results["embed_dihedral"]["extrapolated_s"] = measured[reference]["seconds"] * size / reference
            results["embed_dihedral"]["extrapolated_from"] = reference


def _dihedral_seconds(results: dict[str, Any]) -> Any:
    dihedral = results.get("embed_dihedral") or {}
    if "extrapolated_s" in dihedral:
        return Failure(f"~{dihedral['extrapolated_s']:,.0f} (not run: extrapolated linearly from "
                       f"{dihedral['extrapolated_from']:,})")  # fmt: skip
    return _ok(dihedral, "seconds")


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Failure):
        return value.reason.replace("|", "/")
    if isinstance(value, tuple):
        return " / ".join(format_value(v) for v in value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"


def growth(metric: Metric, values: list[Any], sizes: list[int]) -> tuple[str, str]:
    """(growth cell, flag) from the smallest to the largest size."""
    first, last = values[0], values[-1]
    if isinstance(first, tuple):  # p50 / p95: the p50 grows with less noise
        first, last = first[metric.pick], last[metric.pick] if isinstance(last, tuple) else last
    if not isinstance(first, int | float) or not isinstance(last, int | float) or first <= 0 or last <= 0:
        return "-", ""
    ratio = last / first
    exponent = math.log(ratio) / math.log(sizes[-1] / sizes[0])
    cell = f"x{ratio:.2f} (N^{exponent:.2f})"
    flag = ""
    if metric.kind == "total" and exponent > 1.1:
        flag = "**faster than linear**"
    elif metric.kind == "per_item" and exponent > 0.5:
        flag = "**per request, grows with N**"
    elif metric.kind == "rate" and exponent < -0.1:
        flag = "**slower per item at size**"
    return cell, flag


def summary_table(by_size: dict[int, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    sizes = sorted(by_size)
    header = ["step / measure", "unit", *[f"{n:,} sources" for n in sizes]]
    if len(sizes) > 1:
        header += [f"growth {sizes[0]:,} -> {sizes[-1]:,}", "flag"]
    rows, records = [], []
    for metric in metrics():
        values = [metric.get(by_size[n]) for n in sizes]
        if all(v is None for v in values):
            continue
        row = [metric.name, metric.unit, *[format_value(v) for v in values]]
        cell, flag = growth(metric, values, sizes) if len(sizes) > 1 else ("", "")
        if len(sizes) > 1:
            row += [cell, flag]
        rows.append(row)
        records.append({"metric": metric.name, "unit": metric.unit, "kind": metric.kind,
                        "values": {str(n): (v.reason if isinstance(v, Failure) else v) for n, v in
                                   zip(sizes, values, strict=True)}, "growth": cell, "flag": flag})  # fmt: skip
    return markdown_table(header, rows), records


def web_memory_lines(by_size: dict[int, dict[str, Any]]) -> list[str]:
    lines = []
    for size, results in sorted(by_size.items()):
        web = results.get("web")
        if not web:
            continue
        for when in ("memory_before_search", "memory_after_pages", "memory_after_exports"):
            if when not in web:
                continue
            each = ", ".join(f"{v['rss_mib']:.0f}/{v['pss_mib']:.0f}" for v in web[when].values())
            lines.append(f"- {size:,} sources, {when.replace('memory_', '').replace('_', ' ')}: RSS/PSS MiB of each "
                         f"of the {len(web[when])} gunicorn workers: {each}")  # fmt: skip
        if web.get("worker_timeouts"):
            lines.append(f"- {size:,} sources: gunicorn logged {web['worker_timeouts']} WORKER TIMEOUT(s)")
    return lines


def report(args: argparse.Namespace, by_size: dict[int, dict[str, Any]], table: str) -> str:
    sizes = sorted(by_size)
    facts = []
    for size in sizes:
        results = by_size[size]
        votes = results.get("votes", {})
        bulk = results.get("bulk", {})
        facts.append(
            f"- {size:,} sources: {min(args.fits, size):,} as FITS files through `manage.py ingest`"
            + (f", {size - min(args.fits, size):,} through `ingest_records` ({bulk.get('items', 0):,} ingested, "
               f"{args.generators} helper process preprocessing)" if size > args.fits else "")
            + (f"; {votes.get('votes', 0):,} votes + {votes.get('gold_votes', 0):,} gold answers by "
               f"{votes.get('volunteers', 0):,} volunteers ({votes.get('method')}), {votes.get('retired', 0):,} "
               f"retired, {votes.get('explored', 0):,} explored, {votes.get('gold', 0)} gold"
               if votes.get("ok") else "")
            + f"; whole run {results.get('total_s', 0) / 60:.0f} min"
        )  # fmt: skip
    sizes_arg = ",".join(str(n) for n in sizes)
    return "\n".join([
        f"Command: `.venv/bin/python -m bench.survey_scale {args.command_line}`"
        if getattr(args, "command_line", None)
        else f"Command: `.venv/bin/python -m bench.survey_scale --sizes {sizes_arg} --fits {args.fits} "
        f"--volunteers {args.volunteers} --out {args.out}`",
        f"Machine: {MACHINE}, PostgreSQL 127.0.0.1, Python {platform.python_version()}. Date: {DATE}. "
        "Times from this machine are indicative; ratios within one run are comparable.",
        "",
        "Each step runs in its own process (peak RSS: its `VmHWM`, Django and imports included; helper "
        f"processes apart) and is stopped after {args.step_minutes:g} min (the bulk ingest after "
        f"{args.bulk_minutes:g}). Jobs run through `create_job` + `run_job` as a worker runs them. "
        "The encoder is the cpu-quick architecture, "
        + ("from " + str(args.checkpoint) if args.checkpoint else "randomly initialised (its time does not "
           "depend on the weights)") + "; the retrain, refresh and pages use its centre-view embedding. "
        f"Web: gunicorn, {args.web_workers} sync workers (gunicorn.conf.py's 2 x cores), production settings, "
        "no Redis (sessions in the database); the pages' p50 / p95 are over "
        f"{args.page_repeats} requests after the first; `next` + vote: {args.web_volunteers} volunteers with long "
        f"histories, closed loop for {args.labelling_seconds:g} s. Growth: the largest size's value over the "
        "smallest's, and the exponent e of N^e; flagged when a whole step grows faster than linearly (e > 1.1), "
        "a per-request time grows with N (e > 0.5), or a rate falls (e < -0.1).",
        "",
        *facts,
        "",
        table,
        "",
        *web_memory_lines(by_size),
    ])  # fmt: skip


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of sources")
    parser.add_argument("--fits", type=int, default=10_000, help="sources written and ingested as FITS files")
    parser.add_argument("--volunteers", type=int, default=3000, help="simulated volunteers")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "survey_scale")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/rgz_scale",
        help="each size gets this database with _<size> appended; 'sqlite': the embedded default",
    )
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("RGZ_SHARED_DATA", ROOT.parent / "shared" /
                                                                            "data")))  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help="an encoder checkpoint (default: random cpu-quick weights)")
    parser.add_argument("--dihedral-max", type=int, default=10_000, help="largest size embedded with dihedral views")
    parser.add_argument("--step-minutes", type=float, default=45.0, help="limit of each measured step")
    parser.add_argument("--bulk-minutes", type=float, default=120.0, help="limit of the bulk ingest")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="client limit of one HTTP request (s)")
    parser.add_argument("--page-repeats", type=int, default=20, help="requests per page after the first")
    parser.add_argument("--labelling-seconds", type=float, default=20.0)
    parser.add_argument("--web-volunteers", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--generators", type=int, default=1, help="helper processes preprocessing the bulk load")
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep each size's database, data folder and FITS files")
    parser.add_argument("--reuse", action="store_true", help="reuse sizes already measured in --out")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted size from its last step")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return args
    try:
        args.size_list = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not args.size_list or min(args.size_list) < 2 * N_GOLD:
        parser.error(f"every size must be at least {2 * N_GOLD} sources (there are {N_GOLD} gold sources)")
    if args.fits < 1:
        parser.error("--fits must be at least 1 (search by image uploads one of the files)")
    if args.volunteers < RETIRE_AFTER or args.web_volunteers < 3:
        parser.error(f"--volunteers must be at least {RETIRE_AFTER} and --web-volunteers at least 3")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    args.out = args.out.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step:
        run_step_here(args.step, args.context)
        return 0
    # As given, for the table's "Command:" line (every option that shaped the run).
    args.command_line = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    # Sessions made by a step must be readable by the server: one secret key for every process.
    os.environ.setdefault("DJANGO_SECRET_KEY", "survey-scale-" + secrets.token_urlsafe(48))
    work = args.out / "work"
    prepare(args, work)
    by_size: dict[int, dict[str, Any]] = {}
    for size in args.size_list:
        saved = args.out / f"results-{size}.json"
        if args.reuse and saved.exists():
            by_size[size] = json.loads(saved.read_text())
            print(f"[{size}] reusing {saved}", flush=True)
            continue
        args.current_size = size
        by_size[size] = measure_size(args, work)
        saved.write_text(json.dumps(by_size[size], indent=1, default=str))
    extrapolate_dihedral(by_size)
    table, records = summary_table(by_size)
    body = report(args, by_size, table)
    print("\n" + body)
    (args.out / "survey_scale.md").write_text(f"## {SECTION}\n\n{body}\n")
    (args.out / "survey_scale.json").write_text(json.dumps(
        {"machine": MACHINE, "date": DATE, "sizes": sorted(by_size), "rows": records,
         "results": {str(n): r for n, r in by_size.items()}}, indent=1, default=str))  # fmt: skip
    if not args.keep:
        shutil.rmtree(work / "fits", ignore_errors=True)
        for subset in work.glob("fits-*"):
            shutil.rmtree(subset, ignore_errors=True)
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, body)
    return 0


if __name__ == "__main__":
    # A plain `kill` stops the run like Ctrl-C: the server and steps are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())

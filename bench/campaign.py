"""Campaign replay through the real stack: volunteer votes per correct catalogue entry.

Replays a labelling campaign on a labelled pool (MiraBest: 1,256 sources with its Confident /
Uncertain flags and hybrids; or the Griese set: 2,158 sources, 4 classes) through what
``docker compose`` and CI run: gunicorn with production settings, PostgreSQL, Redis, the real
Celery workers (``default`` with beat, ``gpu``) on the product's own retrain / refresh loop,
with beat's intervals shortened (printed). Simulated volunteers (``ml.crowd``) arrive one
after another, start as guests and label over HTTP with the real endpoints (``next``, vote,
skip), each with a confusion matrix of their own, much worse on ambiguous sources, and a
heavy-tailed number of sources before they leave.

Arms, on the same volunteers and seeds (``--arms``):

* ``a5``, ``a20``: the Zooniverse / Radio Galaxy Zoo way: random order, retire after 5 or 20
  votes, majority vote, no classifier;
* ``b``: rgzlabel as shipped: its embedding, guarded queue, consensus, retirement rules and
  machine-assisted retirement at the workflow's default threshold (``b:0.9``: at 0.9);
* ``c``: as ``b`` with the queue in random order (what active learning adds is b - c);
* ``a5n`` (any ``a<N>n``): the null arm: ``a5`` again with its own crowd answers and its own
  random order (same volunteers' skills, same gold). Its saving against ``a5`` must come out
  at 1.0x within its interval, or the saving statistic credits arms with chance;
* ``b@S`` / ``c@S``: with the workflow's consensus prior at strength S (``b@1``: the consensus
  shipped before 2026-12-05, the most probable class);
* ``b+RULE`` / ``c+RULE``: with another retirement rule (:class:`ml.retirement.RetirementRule`):
  ``b+fixed:5`` (every subject after 5 votes: the rule shipped before 2026-12-06),
  ``b+margin:3/9`` (a class leads by 3 votes, else 9), ``b+agree:3/5``.

Metric: catalogue accuracy over the pool (gold sources left out: their labels are given),
each source labelled by its retired consensus, else the active classifier's prediction,
else the majority of its votes so far, else wrong; against the total volunteer votes
(answers to gold sources included: they cost clicks). Also per-class recall, macro F1, votes
per retired subject and wall time.

    .venv/bin/python -m bench.campaign --pool mirabest --arms a5,b,c --seeds 0,1,2

Unpaced, the volunteers answer as fast as the stack does (~100 answers/s here), so the loop
sees hundreds of votes between two refreshes. ``--votes-per-s R`` paces all answers together
to R per second: a campaign of 2 answers/s on the product's 60 s tick has ~120 answers per
tick, as ``--votes-per-s 24`` has on the replay's 5 s tick.

Loopback only. Every run has its own database (dropped and made again) and data folder, is
bounded by ``--max-votes`` and ``--max-minutes``, and stops its processes when it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

from bench.load_labelling import loopback_production_env
from ml.crowd import Crowd, CrowdConfig, make_crowd
from ml.retirement import RetirementRule

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Pool:
    dataset: str
    classes: tuple[str, ...]
    #: Error multiplier per class for the simulated volunteers (FRI and bent are the hard ones).
    difficulty: tuple[float, ...]
    default_path: str | None


POOLS = {
    "mirabest": Pool("mirabest", ("FRI", "FRII", "hybrid"), (1.3, 0.7, 1.5), "mirabest/MiraBest_F_batches.tar.gz"),
    "griese": Pool("griese", ("FRI", "FRII", "compact", "bent"), (1.3, 0.7, 0.5, 1.5), None),
}


@dataclass(frozen=True)
class Arm:
    name: str
    retire_after: int
    policy: str | None  # None: the product's default queue policy
    learning: bool  # embedding, classifier and the loop
    majority_only: bool  # the Zooniverse way: majority vote, no weighting
    assist: float | None = None  # machine_retire_confidence; None: the product's default
    #: 0: the seed's own crowd answers and queue order; 1: an independent stream (the null arm).
    stream: int = 0
    prior_strength: float | None = None  # Workflow.consensus_prior_strength; None: the product's default
    retire: RetirementRule | None = None  # the workflow's retirement rule; None: the product's default


#: How far apart the seeds of an arm's independent streams are (crowd answers, queue order).
STREAM_OFFSET = 10_000


def parse_arm(name: str) -> Arm:
    """``a<N>``, ``b`` or ``c``; ``b`` and ``c`` take an optional ``:threshold`` of machine assistance,
    an optional ``@strength`` of the consensus's class prior and an optional ``+rule`` of retirement
    (e.g. ``b@1``, ``b:0.9@0.5``, ``b+fixed:5``)."""
    head, plus, retire_text = name.partition("+")
    retire = None
    if plus:
        try:
            retire = RetirementRule.parse(retire_text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"arm {name!r}: {exc}") from None
        if not head.startswith(("b", "c")):
            raise argparse.ArgumentTypeError(f"arm {name!r}: only b and c take a retirement rule (a<N> is fixed)")
    rest, _, strength_text = head.partition("@")
    kind, _, threshold = rest.partition(":")
    try:
        assist = float(threshold) if threshold else None
        strength = float(strength_text) if strength_text else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"arm {name!r}: the machine-assistance threshold and the prior strength must be numbers"
        ) from None
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise argparse.ArgumentTypeError(f"arm {name!r}: the consensus prior strength must lie in [0, 1]")
    if kind.startswith("a") and kind[1:].isdigit() and not threshold and strength is None:
        return Arm(name, int(kind[1:]), "random", learning=False, majority_only=True)
    if kind.startswith("a") and kind.endswith("n") and kind[1:-1].isdigit() and not threshold and strength is None:
        return Arm(name, int(kind[1:-1]), "random", learning=False, majority_only=True, stream=1)
    if kind in ("b", "c"):
        return Arm(
            name,
            0,
            None if kind == "b" else "random",
            learning=True,
            majority_only=False,
            assist=assist,
            prior_strength=strength,
            retire=retire,
        )
    raise argparse.ArgumentTypeError(
        f"unknown arm {name!r}: a<N> (e.g. a5, a20), a<N>n (null), b, c, b:0.9 (machine assistance), "
        "b@1 (consensus prior strength), b+fixed:5 (retirement rule)"
    )


# --- the stack ------------------------------------------------------------------------------------


def reset_database(url: str) -> None:
    """Drop and create the run's database (the bench's own connections are closed first)."""
    import psycopg
    from django.db import connections

    connections.close_all()
    name = urlsplit(url).path.lstrip("/")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class Stack:
    """gunicorn + the two workers (beat in the first), as ``bin/start`` runs them."""

    def __init__(self, args: argparse.Namespace, data_dir: Path):
        self.args, self.data_dir = args, data_dir
        self.processes: list[subprocess.Popen] = []
        self.env = loopback_production_env(
            args.database_url,
            REDIS_URL=args.redis_url,
            RGZ_DATA_DIR=str(data_dir),
            RGZ_TICK_S=str(args.tick_s),
            RGZ_CONSENSUS_EVERY_S=str(args.consensus_every_s),
            RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR="0",
            RGZ_WORKER_AS_ROOT_OK="1",
            RGZ_TORCH_THREADS="1",
            TQDM_DISABLE="1",
            PYTHONUNBUFFERED="1",
        )

    def start(self) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        celery = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--without-gossip",
                  "--without-mingle", "--loglevel", "INFO"]  # fmt: skip
        beat = ["-B", "-s", str(self.data_dir / "celerybeat-schedule")]
        # docker compose's `worker` runs two processes: a refresh (the guarded queue's tournament
        # takes seconds to minutes) and a retrain run side by side.
        n = self.args.default_concurrency
        pool = ["-P", "solo"] if n == 1 else ["-P", "prefork", "-c", str(n)]
        self._spawn(
            celery + [*pool, "-Q", "default", "-n", f"campaign-default-{os.getpid()}@%h", *beat],
            logs / "worker-default.log",
        )
        self._spawn(
            celery + ["-P", "solo", "-Q", "gpu", "-n", f"campaign-gpu-{os.getpid()}@%h"], logs / "worker-gpu.log"
        )
        self._spawn(
            [sys.executable, "-m", "gunicorn", "rgzlabel.wsgi:application", "--bind", f"127.0.0.1:{self.args.port}",
             "--workers", str(self.args.web_workers), "--threads", "4", "--log-level", "warning"],
            logs / "gunicorn.log",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=2)
                connection.request("GET", "/label/")
                connection.getresponse().read()
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server did not start within 60 s; see {logs}")

    def _spawn(self, command: list[str], log_path: Path) -> None:
        with open(log_path, "ab") as log:
            self.processes.append(
                subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


# --- the campaign's database --------------------------------------------------------------------


@dataclass
class Truth:
    """What the bench knows and the server does not: each source's class and ambiguity."""

    classes: tuple[str, ...]
    label: dict[int, int]  # source id -> class index
    ambiguous: dict[int, bool]
    scored: np.ndarray  # source ids in the metric (not gold)


def prepare_run(args: argparse.Namespace, pool: Pool, arm: Arm, seed: int) -> Truth:
    """A fresh database with the pool ingested, the workflow set up for ``arm``, gold chosen."""
    from django.core.management import call_command

    from rgzlabel.catalog.services import ingest_dataset

    reset_database(args.database_url)
    call_command("migrate", verbosity=0)
    path = str(args.data) if args.data else (str(args.shared / pool.default_path) if pool.default_path else None)
    report = ingest_dataset(pool.dataset, path)
    for error in report.errors:  # a bad record is left out, as the product's ingest does
        print(f"  not ingested: {error}", flush=True)
    if not read_truth_count(pool):
        raise RuntimeError(f"nothing of the {pool.dataset} pool was ingested: {report.errors[:3]}")
    configure(pool, arm, seed, gold_per_class=args.gold_per_class, retrain_every_labels=args.retrain_every_labels)
    return read_truth(pool)


def read_truth_count(pool: Pool) -> int:
    from rgzlabel.catalog.models import Provenance

    return Provenance.objects.filter(dataset=pool.dataset, catalogue_label__in=pool.classes).count()


def configure(pool: Pool, arm: Arm, seed: int, *, gold_per_class: int, retrain_every_labels: int) -> None:
    """The default workflow, its queue and the loop set up for ``arm``; gold sources chosen."""
    from rgzlabel.labelling.services import default_workflow, seed_gold_from_catalogue, sync_subjects
    from rgzlabel.learning.models import LoopSettings, QueuePolicy

    workflow = default_workflow()
    workflow.classes = [{"key": key, "label": key, "help": ""} for key in pool.classes] + [
        {"key": "unsure", "label": "Not sure / other", "help": ""}
    ]
    # a<N>: the Zooniverse way, a fixed count and nothing earlier; b / c: their rule, else the product's.
    rule = arm.retire or (RetirementRule(retire_after=arm.retire_after) if arm.retire_after else None)
    if rule is not None:
        workflow.retire_after, workflow.retire_on_agreement, workflow.retire_on_margin = (
            rule.retire_after, rule.agreement, rule.margin
        )  # fmt: skip
    if not arm.learning:
        # No classifier to assist, and no policy whose choices an audit sample must check.
        workflow.machine_retire_confidence = 0.0
        workflow.exploration_share = 0.0
    elif arm.assist is not None:
        workflow.machine_retire_confidence = arm.assist
    if arm.prior_strength is not None:
        workflow.consensus_prior_strength = arm.prior_strength
    workflow.save()
    sync_subjects(workflow)
    seed_gold_from_catalogue(workflow, dataset=pool.dataset, per_class=gold_per_class, seed=seed)
    queue, _ = QueuePolicy.objects.get_or_create(workflow=workflow)
    if arm.policy is not None:
        queue.policy = arm.policy
    queue.seed = seed + STREAM_OFFSET * arm.stream
    queue.save()
    loop = LoopSettings.current()
    loop.enabled = arm.learning
    loop.retrain_min_new_labels = retrain_every_labels
    loop.pretrain_growth_fraction = 0.0  # the replay compares queues on one embedding
    loop.save()


def read_truth(pool: Pool) -> Truth:
    """Each ingested source's catalogue class and ambiguity, and the sources the metric scores."""
    from rgzlabel.catalog.models import Provenance
    from rgzlabel.labelling.models import GoldLabel

    label: dict[int, int] = {}
    ambiguous: dict[int, bool] = {}
    for source_id, catalogue_label, code in Provenance.objects.filter(dataset=pool.dataset).values_list(
        "source_id", "catalogue_label", "label_code"
    ):
        if catalogue_label in pool.classes and source_id not in label:
            label[source_id] = pool.classes.index(catalogue_label)
            # MiraBest codes: 2nd digit 1 = "uncertain"; hybrids (3xx) are ambiguous by nature.
            ambiguous[source_id] = pool.dataset == "mirabest" and (code[1:2] == "1" or catalogue_label == "hybrid")
    gold = set(GoldLabel.objects.values_list("source_id", flat=True))
    scored = np.array(sorted(set(label) - gold), dtype=np.int64)
    return Truth(pool.classes, label, ambiguous, scored)


def gold_answers(pool: Pool) -> dict[int, int]:
    """Gold sources' expert classes (the simulated volunteers meet them too)."""
    from rgzlabel.labelling.models import GoldLabel

    rows = GoldLabel.objects.values_list("source_id", "label")
    return {source_id: pool.classes.index(label) for source_id, label in rows if label in pool.classes}


def start_learning(checkpoint: Path | None, seed: int, timeout_s: float, *, pca_dim: int = 64) -> None:
    """Queue the first embedding (pixel PCA or a given encoder) and wait for the first ranking."""
    from rgzlabel.catalog.models import Cutout
    from rgzlabel.learning.jobs import create_job
    from rgzlabel.learning.models import EncoderVersion, Job

    if checkpoint is None:
        create_job(Job.Kind.EMBED, {"method": "pca", "seed": seed, "dim": pca_dim})
    else:
        encoder = EncoderVersion.objects.create(
            name=f"campaign {checkpoint.name}",
            architecture="resnet18",
            config={"checkpoint": str(checkpoint)},
            checkpoint_path=str(checkpoint.resolve()),
            n_images=Cutout.objects.count(),
        )
        create_job(Job.Kind.EMBED, {"method": "encoder", "encoder": encoder.pk})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        failed = Job.objects.filter(state=Job.State.FAILED).first()
        if failed is not None:
            raise RuntimeError(f"job {failed.pk} ({failed.kind}) failed: {failed.error}")
        if Job.objects.filter(kind=Job.Kind.REFRESH, state=Job.State.SUCCEEDED).exists():
            return
        time.sleep(1)
    raise RuntimeError(f"no queue ranking within {timeout_s} s of the embedding job")


# --- volunteers over HTTP ------------------------------------------------------------------------


#: A posted form: fields, or (name, value) pairs where a name repeats.
Form = dict[str, Any] | list[tuple[str, Any]]


class Browser:
    """One volunteer's keep-alive connection with its cookies (session and CSRF)."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.pending: dict[str, Any] | None = None  # the next subject the last answer brought

    def request(self, method: str, path: str, form: Form | None = None) -> tuple[int, bytes]:
        headers = {"Referer": f"http://127.0.0.1:{self.port}/label/"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["X-CSRFToken"] = self.cookies.get("csrftoken", "")
            body = urlencode(form)
        for attempt in range(3):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response.status, payload

    def json(self, method: str, path: str, form: Form | None = None) -> dict[str, Any]:
        status, payload = self.request(method, path, form)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}: {payload[:200]!r}")
        return json.loads(payload)

    def start_as_guest(self) -> None:
        self.request("GET", "/label/")
        token = self.cookies.get("csrftoken", "")
        status, payload = self.request("POST", "/label/guest/", {"csrfmiddlewaretoken": token})
        if status != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"starting as a guest answered {status}: {payload[:200]!r}")


@dataclass
class Tally:
    votes: int = 0
    skips: int = 0
    lost_clicks: int = 0  # votes refused because the source retired while the volunteer looked at it
    volunteers: int = 0
    nothing_served: list[int] = field(default_factory=list)  # votes so far each time `next` had nothing
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Pacer:
    """Spaces the volunteers' answers (votes and skips) at most ``rate`` per second, all together.

    A real campaign's volunteers answer a few times a second at most, so the loop retrains
    and refreshes between a handful of votes; unpaced, the replay's volunteers answer ~100
    times a second and the loop sees hundreds of votes between two refreshes. Each answer
    takes the next free slot (``1 / rate`` apart); ``rate`` None or 0 leaves them unpaced.
    """

    def __init__(self, rate: float | None, *, clock=time.monotonic, sleep=time.sleep):
        if rate is not None and rate < 0:
            raise ValueError(f"the pace must be a positive number of answers per second, got {rate}")
        self.interval = 1.0 / rate if rate else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_slot: float | None = None
        self.lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller's slot."""
        if not self.interval:
            return
        with self.lock:
            now = self.clock()
            slot = now if self.next_slot is None or self.next_slot < now else self.next_slot
            self.next_slot = slot + self.interval
        delay = slot - self.clock()
        if delay > 0:
            self.sleep(delay)


class Campaign:
    """The arrival of volunteers, ``concurrency`` of them labelling at any time."""

    def __init__(
        self,
        port: int,
        crowd: Crowd,
        truth: Truth,
        gold: dict[int, int],
        *,
        concurrency: int,
        max_votes: int,
        pacer: Pacer | None = None,
    ):
        self.port, self.crowd, self.truth, self.gold = port, crowd, truth, gold
        self.concurrency, self.max_votes = concurrency, max_votes
        self.pacer = pacer or Pacer(None)
        self.tally = Tally()
        self.next_volunteer = 0
        self.stop = threading.Event()
        self.exhausted = 0  # volunteers in a row who found nothing to label

    def take_volunteer(self) -> int | None:
        with self.tally.lock:
            if self.next_volunteer >= len(self.crowd.quotas) or self.stop.is_set():
                return None
            self.next_volunteer += 1
            return self.next_volunteer - 1

    def slot(self) -> None:
        while (volunteer := self.take_volunteer()) is not None:
            try:
                self.volunteer(volunteer)
            except Exception as exc:  # a broken volunteer is counted, the campaign goes on
                with self.tally.lock:
                    self.tally.errors.append(f"volunteer {volunteer}: {exc}")
                    if len(self.tally.errors) > 20:
                        self.stop.set()

    def volunteer(self, volunteer: int) -> None:
        browser = Browser(self.port)
        browser.start_as_guest()
        with self.tally.lock:
            self.tally.volunteers += 1
        rng = self.crowd.answers_rng(volunteer)
        skipped: list[int] = []
        # As the page does: each vote's (and skip's) answer brings the next subject; a volunteer who
        # leaves gives back the one they were served but did not answer.
        try:
            self.label(browser, volunteer, rng, skipped)
        finally:
            if browser.pending is not None:
                browser.json("POST", "/label/api/release/", {"source": browser.pending["id"], "leaving": "1"})

    def label(self, browser: Browser, volunteer: int, rng, skipped: list[int]) -> None:
        for served in range(int(self.crowd.quotas[volunteer])):
            if self.stop.is_set():
                return
            if browser.pending is not None:
                source, browser.pending = browser.pending, None
            else:
                query = urlencode([("exclude", s) for s in skipped[-20:]])
                source = browser.json("GET", f"/label/api/next/?{query}")["source"]
            if source is None:
                with self.tally.lock:
                    self.tally.nothing_served.append(self.tally.votes)
                    self.exhausted = self.exhausted + 1 if served == 0 else 0
                    if self.exhausted >= self.concurrency * 2:
                        self.stop.set()  # everything is retired or held
                return
            source_id = int(source["id"])
            if source_id in self.gold:
                truth, unclear = self.gold[source_id], False
            else:
                truth, unclear = self.truth.label.get(source_id, 0), self.truth.ambiguous.get(source_id, False)
            answer = self.crowd.respond(volunteer, truth, unclear, rng)
            self.pacer.wait()  # the volunteer looks at the source before answering
            if answer is None:
                skipped.append(source_id)
                form = [("source", source_id), *(("exclude", s) for s in skipped[-20:])]
                browser.pending = browser.json("POST", "/label/api/skip/", form).get("next")
                with self.tally.lock:
                    self.tally.skips += 1
                continue
            status, payload = browser.request(
                "POST", "/label/api/vote/", {"source": source_id, "label": self.truth.classes[answer]}
            )
            if status == 400 and b"already retired" in payload:
                # Retired while this volunteer looked at it (the others' votes, or the machine):
                # the click is lost, as it would be on the page, which then moves on.
                browser.pending = json.loads(payload).get("next")
                with self.tally.lock:
                    self.tally.lost_clicks += 1
                continue
            if status != 200:
                raise RuntimeError(f"POST /label/api/vote/ answered {status}: {payload[:200]!r}")
            answered = json.loads(payload)
            browser.pending = answered.get("next")
            with self.tally.lock:
                self.exhausted = 0
                self.tally.votes += bool(answered.get("created"))
                if self.tally.votes >= self.max_votes:
                    self.stop.set()


# --- the metric ------------------------------------------------------------------------------------


def catalogue_snapshot(truth: Truth, arm: Arm) -> dict[str, Any]:
    """Catalogue accuracy now.

    Learning arms: the product's catalogue label (:mod:`rgzlabel.science.catalogue`: retired
    consensus, else the votes so far combined with the classifier); ``accuracy_classifier_only``
    keeps the first definition (retired consensus, else the classifier alone). Arms without
    learning: retired consensus, else the majority of the votes so far.
    """
    from sklearn.metrics import f1_score

    from rgzlabel.labelling.models import Classification, Subject
    from rgzlabel.labelling.services import MACHINE_ASSISTED_REASON, default_workflow
    from rgzlabel.science.catalogue import SubjectState, catalogue_entries
    from rgzlabel.science.predictions import active_classifier, predict_sources

    workflow = default_workflow()
    rows = {
        r[0]: r[1:]
        for r in Subject.objects.filter(workflow=workflow, source_id__in=truth.scored.tolist()).values_list(
            "source_id",
            "retired_at",
            "retire_reason",
            "consensus_label",
            "weighted_label",
            "assisted_label",
            "vote_count",
        )
    }
    classifier = active_classifier() if arm.learning else None
    predictions = predict_sources(truth.scored.tolist(), classifier) if classifier is not None else None
    entries = {}
    if arm.learning:
        states = [
            SubjectState(s, r[0] is not None, r[1] or "", r[2] or "", r[3] or "", r[4] or "", r[5] or 0)
            for s, r in rows.items()
        ]
        entries = catalogue_entries(workflow, states, predictions)
    labels, first_labels, retired, assisted = [], [], 0, 0
    for source_id in truth.scored.tolist():
        retired_at, reason, majority, weighted, assisted_label, _count = rows.get(source_id, (None, "", "", "", "", 0))
        label = ""
        if retired_at is not None:
            retired += 1
            if reason == MACHINE_ASSISTED_REASON:
                assisted += 1
                label = assisted_label
            else:
                label = majority if arm.majority_only else (weighted or majority)
        elif predictions is not None and source_id in predictions.by_source:
            label = predictions.label_of(source_id)
        else:
            label = majority
        first_labels.append(label)
        labels.append(entries[source_id].label if source_id in entries else label)
    classes = list(truth.classes)
    true = np.array([truth.label[s] for s in truth.scored.tolist()])
    guess = np.array([classes.index(label) if label in classes else -1 for label in labels])
    first_guess = np.array([classes.index(label) if label in classes else -1 for label in first_labels])
    recall = {c: float(np.mean(guess[true == k] == k)) if np.any(true == k) else None for k, c in enumerate(classes)}
    present = [k for k in range(len(classes)) if np.any(true == k)]
    f1 = dict(
        zip(
            [classes[k] for k in present],
            f1_score(true, guess, labels=present, average=None, zero_division=0).tolist(),
            strict=True,
        )
    )
    return {
        "votes": Classification.objects.filter(workflow=workflow).count(),
        "accuracy": float(np.mean(guess == true)),
        "accuracy_classifier_only": float(np.mean(first_guess == true)),
        "recall": recall,
        "f1": f1,
        "retired": retired,
        "assisted": assisted,
        "assisted_correct": int(
            sum(
                1
                for s, g, t in zip(truth.scored.tolist(), guess, true, strict=True)
                if rows.get(s, (None, ""))[1] == MACHINE_ASSISTED_REASON and g == t
            )
        ),
        "classifier": classifier.pk if classifier is not None else None,
    }


def run_one(args: argparse.Namespace, pool: Pool, arm: Arm, seed: int, data_root: Path) -> dict[str, Any]:
    from django.db import connection

    from rgzlabel.learning.models import Job

    started = time.monotonic()
    truth = prepare_run(args, pool, arm, seed)
    gold = gold_answers(pool)
    embedding = "pca" if args.checkpoint is None else args.checkpoint.stem
    data_dir = data_root / f"{pool.dataset}-{embedding}-{arm.name}-s{seed}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    flush_broker(args.redis_url)
    stack = Stack(args, data_dir)
    stack.start()
    snapshots: list[dict[str, Any]] = []
    try:
        if arm.learning:
            start_learning(args.checkpoint, seed, args.embed_timeout_s)
        ready_s = time.monotonic() - started
        crowd = make_crowd(
            CrowdConfig(n_volunteers=args.crowd, class_difficulty=pool.difficulty), len(pool.classes), seed
        )
        if arm.stream:  # the same volunteers (skills, quotas), their answers drawn afresh
            crowd = dataclasses.replace(crowd, seed=seed + STREAM_OFFSET * arm.stream)
        campaign = Campaign(
            args.port,
            crowd,
            truth,
            gold,
            concurrency=args.concurrency,
            max_votes=args.max_votes,
            pacer=Pacer(args.votes_per_s),
        )
        threads = [threading.Thread(target=campaign.slot, daemon=True) for _ in range(args.concurrency)]
        clock = time.monotonic()
        for thread in threads:
            thread.start()
        deadline = clock + args.max_minutes * 60
        last = -1
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.5)
            if time.monotonic() > deadline or not stack.alive():
                campaign.stop.set()
            if campaign.tally.votes - last >= args.snapshot_every:
                last = campaign.tally.votes
                snapshots.append(catalogue_snapshot(truth, arm) | {"seconds": time.monotonic() - clock})
                print(f"  {arm.name} seed {seed}: {snapshots[-1]['votes']} votes, accuracy "
                      f"{snapshots[-1]['accuracy']:.3f}, retired {snapshots[-1]['retired']}", flush=True)  # fmt: skip
        campaign_s = time.monotonic() - clock
        if arm.learning:
            # The loop catches up with the last votes: one more tick, then the last snapshot.
            wait_for_quiet_jobs(args.tick_s * 3 + 30)
        snapshots.append(catalogue_snapshot(truth, arm) | {"seconds": time.monotonic() - clock})
        # The catalogue as the next Dawid-Skene refit leaves it (a live campaign exports after
        # refits): subjects retired since the last one keep their vote-time labels until then.
        from rgzlabel.labelling.services import default_workflow, recompute_consensus

        recompute_consensus(default_workflow())
        after_refit = catalogue_snapshot(truth, arm)
        jobs = {kind: Job.objects.filter(kind=kind, state=Job.State.SUCCEEDED).count() for kind in Job.Kind.values}
        failed_jobs = [f"{j.kind} {j.pk}: {j.error[:200]}" for j in Job.objects.filter(state=Job.State.FAILED)]
    finally:
        stack.stop()
        connection.close()
    return {
        "pool": pool.dataset,
        "arm": arm.name,
        "seed": seed,
        "n_scored": len(truth.scored),
        "n_gold": len(gold),
        "setup_s": ready_s,
        "campaign_s": campaign_s,
        "volunteers": campaign.tally.volunteers,
        "skips": campaign.tally.skips,
        "lost_clicks": campaign.tally.lost_clicks,
        "nothing_served": campaign.tally.nothing_served,
        "errors": campaign.tally.errors,
        "jobs": jobs,
        "failed_jobs": failed_jobs,
        "snapshots": snapshots,
        "after_refit": after_refit,
    }


def wait_for_quiet_jobs(timeout_s: float) -> None:
    from rgzlabel.learning.models import Job

    deadline = time.monotonic() + timeout_s
    time.sleep(min(timeout_s, 2.0))
    while time.monotonic() < deadline and Job.objects.filter(state__in=Job.ACTIVE_STATES).exists():
        time.sleep(1)


def flush_broker(url: str) -> None:
    """Leftover messages of an earlier run name jobs of a database that is gone."""
    import redis

    redis.Redis.from_url(url).flushdb()


# --- the summary -----------------------------------------------------------------------------------


def curve(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    votes = np.array([s["votes"] for s in run["snapshots"]], dtype=float)
    accuracy = np.array([s["accuracy"] for s in run["snapshots"]])
    order = np.argsort(votes, kind="stable")
    return votes[order], accuracy[order]


def votes_to_reach(run: dict[str, Any], target: float) -> float:
    """Votes at the first snapshot with accuracy >= target (inf if never)."""
    votes, accuracy = curve(run)
    hit = np.flatnonzero(accuracy >= target - 1e-12)
    return float(votes[hit[0]]) if len(hit) else float("inf")


def common_target_saving(run: dict[str, Any], reference: dict[str, Any]) -> float:
    """Votes the reference needs over votes ``run`` needs, to reach the lower of their final accuracies.

    Unlike "votes to reach the reference's final accuracy", it exists for every pair (each run
    reaches its own final accuracy), and it is symmetric: two runs of one arm give 1.0x on
    average, which is what the null arm checks.
    """
    target = min(curve(run)[1][-1], curve(reference)[1][-1])
    return votes_to_reach(reference, target) / max(1.0, votes_to_reach(run, target))


def saving_interval(savings: Sequence[float]) -> tuple[float, float, float]:
    """Geometric mean of paired savings and its 95 % t-interval (on the log ratios)."""
    from scipy import stats

    logs = np.log(np.asarray(savings, dtype=float))
    mean = float(logs.mean())
    if len(logs) < 2:
        return float(np.exp(mean)), float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs)))
    return float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half))


def accuracy_at(run: dict[str, Any], grid: np.ndarray) -> np.ndarray:
    """Accuracy at each vote count of ``grid`` (the last snapshot at or before it; NaN past the run)."""
    votes, accuracy = curve(run)
    index = np.searchsorted(votes, grid, side="right") - 1
    values = np.where(index >= 0, accuracy[np.clip(index, 0, None)], np.nan)
    return np.where(grid <= votes[-1], values, np.nan)


def mean_sd(values: Sequence[float], fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    """``mean +- sample std`` of ``values * scale``, or how many are not finite (a target not reached)."""
    array = np.asarray(values, dtype=float) * scale
    if not np.all(np.isfinite(array)):
        return f"not reached in {int(np.sum(~np.isfinite(array)))} of {len(array)}"
    return (fmt + " +- " + fmt).format(array.mean(), array.std(ddof=1) if len(array) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]], reference: str) -> list[str]:
    """Markdown lines: per arm final accuracy, votes, recall, and the votes to reach the reference."""
    from scipy import stats

    arms = sorted({r["arm"] for r in runs}, key=lambda a: (a[0] != "a", a))
    by = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    classes = list(runs[0]["snapshots"][-1]["recall"])
    lines = [
        f"| arm | seeds | votes | accuracy | macro F1 | {' | '.join(f'recall {c}' for c in classes)} | retired "
        "| votes per retired"
        f" | machine-assisted (correct) | votes to reach {reference}'s final accuracy | saving vs {reference} "
        "| retrains | campaign time |",
        "| --- " * (12 + len(classes)) + "|",
    ]
    for arm in arms:
        rows = [by[(arm, s)] for s in seeds if (arm, s) in by]
        last = [r["snapshots"][-1] for r in rows]
        savings, reach = [], []
        for r in rows:
            ref = by.get((reference, r["seed"]))
            if ref is None:
                continue
            target = ref["snapshots"][-1]["accuracy"]
            needed = votes_to_reach(r, target)
            reach.append(needed)
            if np.isfinite(needed):
                savings.append(ref["snapshots"][-1]["votes"] / needed)

        saving_text = mean_sd(savings, "{:.2f}") + "x" if savings else "-"
        if savings and len(savings) < len(reach):
            saving_text += f" (reached in {len(savings)} of {len(reach)})"
        recalls = " | ".join(mean_sd([s["recall"][c] or 0 for s in last], scale=100) for c in classes)
        macro_f1 = (
            mean_sd([np.mean(list(s["f1"].values())) for s in last], scale=100) + " %"
            if all("f1" in s for s in last)
            else "-"
        )
        retired = [s["retired"] for s in last]
        lines.append(
            f"| {arm} | {len(rows)} | {mean_sd([s['votes'] for s in last], '{:.0f}')} "
            f"| {mean_sd([s['accuracy'] for s in last], scale=100)} % | {macro_f1} | {recalls} "
            f"| {mean_sd(retired, '{:.0f}')} "
            f"| {mean_sd([s['votes'] / max(1, s['retired']) for s in last])} "
            f"| {mean_sd([s['assisted'] for s in last], '{:.0f}')} ({sum(s['assisted_correct'] for s in last)} of "
            f"{sum(s['assisted'] for s in last)}) "
            f"| {mean_sd(reach, '{:.0f}') if reach else '-'} "
            f"| {saving_text} "
            f"| {mean_sd([r['jobs'].get('retrain', 0) for r in rows], '{:.0f}')} "
            f"| {mean_sd([r['campaign_s'] for r in rows], '{:.0f}')} s |"
        )
    refitted = [arm for arm in arms if all("after_refit" in by[(arm, s)] for s in seeds if (arm, s) in by)]
    if refitted:
        lines += [
            "",
            "After one more Dawid-Skene refit (the catalogue a live campaign exports):",
            "",
            f"| arm | accuracy | macro F1 | {' | '.join(f'recall {c}' for c in classes)} |",
            "| --- " * (3 + len(classes)) + "|",
        ]
        for arm in refitted:
            after = [by[(arm, s)]["after_refit"] for s in seeds if (arm, s) in by]
            cells = [
                mean_sd([a["accuracy"] for a in after], scale=100) + " %",
                mean_sd([np.mean(list(a["f1"].values())) for a in after], scale=100) + " %",
                *(mean_sd([a["recall"][c] or 0 for a in after], scale=100) for c in classes),
            ]
            lines.append(f"| {arm} | {' | '.join(cells)} |")
    lines.append("")
    for arm in arms:
        pairs = [(by[(arm, s)], by[(reference, s)]) for s in seeds if (arm, s) in by and (reference, s) in by]
        if arm == reference or not pairs:
            continue
        mean, low, high = saving_interval([common_target_saving(run, ref) for run, ref in pairs])
        verdict = ""
        if arm.endswith("n") and arm[1:-1] == reference[1:]:
            inside = low <= 1.0 <= high
            verdict = " - the null test " + ("passes (1.0x inside)" if inside else "FAILS (1.0x outside)")
        lines.append(
            f"- {arm} vs {reference}, saving at the common target (the lower final accuracy of each pair), paired "
            f"by seed: {mean:.2f}x [{low:.2f}, {high:.2f}] (geometric mean, 95 % t-interval over {len(pairs)} "
            f"seeds){verdict}"
        )
    for b_arm in [a for a in arms if a.partition(":")[0] == "b"]:
        c_arm = "c" + b_arm[1:]
        if c_arm not in arms:
            continue
        # b - c at every vote count both reached, paired by seed: never worse beyond seed noise?
        paired = [s for s in seeds if (b_arm, s) in by and (c_arm, s) in by]
        grid = np.linspace(0, min(min(curve(by[(a, s)])[0][-1] for a in (b_arm, c_arm)) for s in paired), 21)[1:]
        differences = np.array([accuracy_at(by[(b_arm, s)], grid) - accuracy_at(by[(c_arm, s)], grid) for s in paired])
        if len(differences) >= 2:
            mean = differences.mean(axis=0)
            half = (
                stats.t.ppf(0.975, len(differences) - 1) * differences.std(axis=0, ddof=1) / np.sqrt(len(differences))
            )
            worst = int(np.argmin(mean + half))
            lines.append("")
            lines.append(
                f"{b_arm} - {c_arm} accuracy, paired by seed, at 20 vote counts up to {grid[-1]:.0f}: mean from "
                f"{100 * mean.min():+.1f} to {100 * mean.max():+.1f} points; the least favourable point "
                f"({grid[worst]:.0f} votes) {100 * mean[worst]:+.1f} [{100 * (mean[worst] - half[worst]):+.1f}, "
                f"{100 * (mean[worst] + half[worst]):+.1f}] (95 % t-interval over {len(differences)} seeds): "
                + (
                    "worse there beyond seed noise"
                    if mean[worst] + half[worst] < 0
                    else "never worse beyond seed noise"
                )
            )
    return lines


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    colours = {}
    for run in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        votes, accuracy = curve(run)
        label = run["arm"] if run["arm"] not in colours else None
        line = axis.plot(votes, 100 * accuracy, color=colours.get(run["arm"]), alpha=0.8, lw=1.2, label=label)[0]
        colours.setdefault(run["arm"], line.get_color())
    axis.set_xscale("symlog", linthresh=100)
    axis.set_xlabel("volunteer votes (gold answers included)")
    axis.set_ylabel("catalogue accuracy over the pool (%)")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(title="arm (one line per seed)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- the command -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=sorted(POOLS), default="mirabest")
    parser.add_argument("--data", type=Path, help="the pool's file (default: under --shared; griese: the package's)")
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("RGZ_SHARED_DATA", ROOT.parent / "shared" / "data"))
    )
    parser.add_argument(
        "--arms",
        default="a5,a20,b,c",
        help="comma-separated: a<N> (random order, retire after N votes, majority), b, c; b:T / c:T with machine "
        "assistance at threshold T, b@S with the consensus prior at strength S, b+RULE with the retirement rule "
        "RULE (fixed:N, margin:K/N, agree:K/N) (b and c alone: the product's defaults)",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--checkpoint", type=Path, help="an encoder checkpoint for arms b and c (default: pixel PCA)")
    parser.add_argument("--max-votes", type=int, default=8000, help="stop a run after this many votes")
    parser.add_argument("--max-minutes", type=float, default=20.0, help="stop a run's volunteers after this long")
    parser.add_argument("--crowd", type=int, default=1500, help="volunteers who may arrive")
    parser.add_argument("--concurrency", type=int, default=6, help="volunteers labelling at once")
    parser.add_argument(
        "--votes-per-s",
        type=float,
        default=None,
        help="pace the volunteers' answers (votes and skips) to at most this many per second, all volunteers "
        "together (default: as fast as the stack answers; a real campaign's pace is a few per second)",
    )
    parser.add_argument("--gold-per-class", type=int, default=10)
    parser.add_argument("--retrain-every-labels", type=int, default=20, help="LoopSettings.retrain_min_new_labels")
    parser.add_argument("--tick-s", type=int, default=5, help="beat's learning tick (the product's: 60)")
    parser.add_argument("--consensus-every-s", type=int, default=30, help="Dawid-Skene refits (the product's: 600)")
    parser.add_argument("--snapshot-every", type=int, default=100, help="votes between two accuracy snapshots")
    parser.add_argument("--embed-timeout-s", type=int, default=900)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/rgzlabel_campaign")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument(
        "--default-concurrency",
        type=int,
        default=2,
        help="processes of the `default` worker (retrain, refresh): 2 as docker compose runs it; 1 as bin/start",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "campaign")
    parser.add_argument(
        "--reference", help="the arm whose final accuracy the others must reach (default: the first a<N>)"
    )
    args = parser.parse_args(argv)
    args.arm_list = [parse_arm(name.strip()) for name in args.arms.split(",") if name.strip()]
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.database_url.startswith("postgres"):
        parser.error("the replay runs on PostgreSQL (--database-url postgres://...)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` stops the run like Ctrl-C: the stack's processes are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pool = POOLS[args.pool]
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["REDIS_URL"] = args.redis_url
    os.environ.setdefault("DJANGO_SECRET_KEY", "campaign-" + secrets.token_urlsafe(32))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
    os.environ["TQDM_DISABLE"] = "1"
    import django

    django.setup()
    args.out.mkdir(parents=True, exist_ok=True)
    # Paced and unpaced runs of the same arm and seed are different experiments: separate files.
    pace = f"-paced{args.votes_per_s:g}" if args.votes_per_s else ""
    embedding = "pca" if args.checkpoint is None else args.checkpoint.stem
    results_path = args.out / f"{pool.dataset}-{embedding}{pace}.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            run = json.loads(line)
            done[(run["arm"], run["seed"])] = run
    print(
        f"campaign replay: pool {pool.dataset}, arms {args.arms}, seeds {args.seeds}, embedding "
        f"{'pixel PCA' if args.checkpoint is None else args.checkpoint}; beat tick {args.tick_s} s (product 60 s), "
        f"Dawid-Skene refit every {args.consensus_every_s} s (product 600 s), retrain after "
        f"{args.retrain_every_labels} new consensus labels; `default` worker processes {args.default_concurrency}; "
        f"{args.concurrency} volunteers at once, "
        f"{'unpaced' if not args.votes_per_s else f'paced to {args.votes_per_s:g} answers/s'}; results in "
        f"{results_path} (runs already there are reused)",
        flush=True,
    )
    for seed in args.seed_list:
        for arm in args.arm_list:
            if (arm.name, seed) in done:
                continue
            print(f"run: arm {arm.name}, seed {seed}", flush=True)
            run = run_one(args, pool, arm, seed, args.out / "runs")
            run["embedding"] = "pca" if args.checkpoint is None else str(args.checkpoint)
            run["settings"] = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str)) and k != "arms"}
            done[(arm.name, seed)] = run
            with results_path.open("a") as handle:
                handle.write(json.dumps(run) + "\n")
            print(f"  done in {run['campaign_s']:.0f} s: {run['snapshots'][-1]['votes']} votes, accuracy "
                  f"{run['snapshots'][-1]['accuracy']:.3f}; errors {len(run['errors'])}, failed jobs "
                  f"{run['failed_jobs']}", flush=True)  # fmt: skip
    runs = [r for (arm, seed), r in done.items() if arm in {a.name for a in args.arm_list} and seed in args.seed_list]
    reference = args.reference or next((a.name for a in args.arm_list if a.name.startswith("a")), args.arm_list[0].name)
    print()
    for line in summarise(runs, reference):
        print(line)
    plot_path = results_path.with_suffix(".png")
    paced = f", paced to {args.votes_per_s:g} answers/s" if args.votes_per_s else ""
    plot(runs, plot_path, f"campaign replay, {pool.dataset}, {runs[0]['embedding']} embedding{paced}")
    print(f"\nplot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

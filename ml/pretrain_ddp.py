"""BYOL pretraining in several processes: the torchrun entry point and its launcher.

On a machine with N GPUs::

    torchrun --standalone --nproc_per_node N -m ml.pretrain_ddp \\
        --images pool.npy --preset paper --out encoder.pt

runs ``ml.train.pretrain`` in N processes, one per GPU (NCCL), with the global batch of the
preset split across them (``ml.distributed``); on the CPU the processes use gloo. Without
torchrun the same command trains in one process. Rank 0 writes the checkpoint, in the format
of a single-process one, the resumable state (``--resume``) and, with ``--events``, one JSON
line per progress report and one at the end (``done``, ``cancelled`` or ``failed``).

``launch_pretraining`` is ``pretrain`` for a caller that wants the processes: it writes the
images to a folder, starts torchrun in a process group of its own, relays rank 0's progress
from the events file, stops the group when ``should_stop()`` turns True (the processes agree
on a step, rank 0 saves the resumable state, as one process does), and returns a
``PretrainResult`` read back from the checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.augment import ImageArray
from ml.checkpoint import load_checkpoint, save_checkpoint
from ml.config import PretrainConfig, config_from_dict, config_to_dict, get_config, replace_nested
from ml.distributed import start_replicas, stop_replicas
from ml.errors import DistributedRunError, TrainingCancelled
from ml.train import (
    PretrainResult,
    ProgressFn,
    ResumeSpec,
    StopFn,
    TrainingProgress,
    check_data_parallel,
    plan_loop,
    pretrain,
)

#: Exit status of a run that stopped on request (after saving its resumable state).
EXIT_CANCELLED = 3
#: Lines of torchrun's output quoted in the error of a failed run.
LOG_TAIL_LINES = 30


class EventLog:
    """Rank 0's account of the run: one JSON object per line, appended and flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        """Append ``{"event": event, **fields}`` as one line."""
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"event": event, **fields}) + "\n")
            stream.flush()

    def progress(self, report: TrainingProgress) -> None:
        """A progress callback for ``pretrain`` that writes each report as a ``progress`` line."""
        self.write("progress", **vars(report))


class EventReader:
    """Reads the complete lines an ``EventLog`` has added since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        """The events written since the previous call (a line still being written waits)."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ml.pretrain_ddp``."""
    parser = argparse.ArgumentParser(
        prog="python -m ml.pretrain_ddp",
        description="BYOL pretraining; under torchrun with the global batch split across the processes.",
    )
    parser.add_argument("--images", type=Path, required=True, help="uint8 cutouts (N, H, W) as a .npy file")
    parser.add_argument("--source-ids", type=Path, help="their source ids (N,) as a .npy file")
    parser.add_argument("--out", type=Path, required=True, help="the encoder checkpoint to write (rank 0)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--preset", default="cpu-quick", help="pretraining preset (ml.config), default cpu-quick")
    preset.add_argument("--config", type=Path, help="a whole PretrainConfig as JSON (config_to_dict)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a preset field (JSON value; nested fields as run__progress_every=5)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--backend", help="collective backend (default: nccl on CUDA, gloo on the CPU)")
    parser.add_argument("--resume", type=Path, help="resumable state: continued when it matches, saved when stopped")
    parser.add_argument("--resume-every-s", type=float, default=300.0, help="seconds between resumable saves")
    parser.add_argument("--events", type=Path, help="JSON lines of progress and outcome (rank 0)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")
    parser.add_argument("--stop-when-gone", type=int, metavar="PID", help="stop (and save) when this process ends")
    return parser


def read_config(args: argparse.Namespace) -> PretrainConfig:
    """The configuration named on the command line.

    Raises:
        ValueError: An unreadable config file, or an override that is not FIELD=VALUE.
        KeyError: An unknown preset.
        TypeError: An unknown field.
    """
    if args.config is not None:
        config = config_from_dict(PretrainConfig, json.loads(args.config.read_text()))
        return config if not args.set else _with_overrides(config, args.set)
    return _with_overrides(get_config(args.preset), args.set)


def _with_overrides(config: PretrainConfig, assignments: Sequence[str]) -> PretrainConfig:
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        field_name, separator, text = assignment.partition("=")
        if not separator or not field_name:
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE")
        try:
            overrides[field_name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[field_name] = text  # a bare word, e.g. tau_schedule=cosine
    return replace_nested(config, **overrides)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run one process of the pretraining; returns the exit status (``EXIT_CANCELLED`` when stopped)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stop_requested = threading.Event()
    # torchrun passes SIGTERM on to every process: each finishes its step, they agree to stop,
    # and rank 0 saves the resumable state before they exit.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        config = read_config(args)
    except (ValueError, KeyError, TypeError) as exc:
        parser.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    images = np.load(args.images, mmap_mode="r")
    source_ids = np.load(args.source_ids) if args.source_ids is not None else None

    def should_stop() -> bool:
        return stop_requested.is_set() or (args.stop_when_gone is not None and not _alive(args.stop_when_gone))

    replicas = start_replicas(args.device, args.backend)
    main_process = replicas is None or replicas.is_main
    events = EventLog(args.events) if args.events is not None and main_process else None
    try:
        result = pretrain(
            images,
            config,
            source_ids=source_ids,
            progress=events.progress if events is not None else None,
            should_stop=should_stop,
            device=None if args.device == "auto" else args.device,
            seed=args.seed,
            resume=ResumeSpec(args.resume, every_s=args.resume_every_s) if args.resume is not None else None,
            replicas=replicas,
        )
        if main_process:
            save_checkpoint(args.out, result)
        if events is not None:
            events.write(
                "done",
                steps=result.steps,
                seconds=result.seconds,
                device=result.device,
                resumed_from=result.resumed_from,
                processes=1 if replicas is None else replicas.world_size,
                checkpoint=str(args.out),
            )
        if replicas is not None:
            replicas.barrier()  # the others exit once the checkpoint is written
        return 0
    except TrainingCancelled as stopped:
        if events is not None:
            events.write("cancelled", step=stopped.step)
        if replicas is not None:
            replicas.barrier()  # rank 0 saved the resumable state before raising
        return EXIT_CANCELLED
    except Exception as exc:
        if events is not None:
            events.write("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop_replicas()


def launch_pretraining(
    images: ImageArray,
    config: PretrainConfig,
    *,
    processes: int,
    workdir: str | Path,
    source_ids: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | None = None,
    seed: int = 0,
    resume: ResumeSpec | None = None,
    threads: int | None = None,
    poll_s: float = 0.5,
    grace_s: float = 120.0,
) -> PretrainResult:
    """``ml.train.pretrain`` in ``processes`` torchrun processes, watched from this one.

    Args:
        images: Preprocessed uint8 cutouts (N, H, W); written to ``workdir`` for the processes.
        config: Hyper-parameters; ``config.batch_size`` is the global batch.
        processes: Processes (one per GPU on CUDA).
        workdir: A folder of this run's own: images, events, torchrun's log, the checkpoint.
            Removed when the run ends, except for the events and the log after a failure.
        source_ids: Ids of the images, hashed into the provenance.
        progress: Called with rank 0's progress reports, as ``pretrain`` calls it.
        should_stop: Polled every ``poll_s``; True stops the processes (SIGTERM to their group),
            which save the resumable state and exit.
        device: ``"cpu"``, ``"cuda"`` (one GPU per process) or None (CUDA when present).
        seed: Seed of initialisation, batch order and augmentations.
        resume: The resumable state, continued and saved as by ``pretrain`` (same format: a state
            saved by one process continues in several and the reverse, on the same device type).
        threads: torch CPU threads per process (default: the cores shared out between them).
        poll_s: Seconds between looks at the events and ``should_stop``.
        grace_s: Seconds the processes get to save and exit once stopped, before SIGKILL.

    Returns:
        The result as ``pretrain`` returns it, with the encoder read back on the CPU and
        ``device`` such as ``"2 x cpu"``.

    Raises:
        ValueError: Fewer than one process, a global batch not divisible by ``processes``, or a
            method that is not ``config.data_parallel`` (VICReg).
        TrainingCancelled: ``should_stop()`` turned True (or the processes were told to stop).
        DistributedRunError: The processes failed; the message quotes the error or the log.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    check_data_parallel(config)
    plan = plan_loop(len(images), config.batch_size, config.epochs, config.max_steps, config.warmup_epochs)
    if plan.batch_size % processes:
        raise ValueError(
            f"the global batch of {plan.batch_size} images does not split evenly across {processes} "
            "processes: choose a batch size divisible by the number of processes"
        )
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)  # a previous attempt's events must not be read as this one's
    workdir.mkdir(parents=True)
    paths = {name: workdir / name for name in ("images.npy", "ids.npy", "config.json", "events.jsonl", "encoder.pt")}
    pixels = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
    np.save(paths["images.npy"], np.ascontiguousarray(pixels))
    paths["config.json"].write_text(json.dumps(config_to_dict(config)))
    threads = threads or max(1, (os.cpu_count() or 1) // processes)
    entry = [
        "-m",
        "ml.pretrain_ddp",
        f"--images={paths['images.npy']}",
        f"--config={paths['config.json']}",
        f"--out={paths['encoder.pt']}",
        f"--events={paths['events.jsonl']}",
        f"--seed={seed}",
        f"--device={device or 'auto'}",
        f"--threads={threads}",
        f"--stop-when-gone={os.getpid()}",  # a launcher killed outright still gets its state saved
    ]
    if source_ids is not None:
        np.save(paths["ids.npy"], np.asarray(source_ids, dtype=np.int64))
        entry.append(f"--source-ids={paths['ids.npy']}")
    if resume is not None:
        entry += [f"--resume={resume.path}", f"--resume-every-s={resume.every_s}"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        f"--shutdown-timeout={int(grace_s)}",
        *entry,
    ]
    package_root = str(Path(__file__).resolve().parent.parent)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": str(threads),
    }
    log_path = workdir / "torchrun.log"
    with log_path.open("wb") as log:
        group = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    try:
        outcome = _watch(group, EventReader(paths["events.jsonl"]), progress, should_stop, poll_s, grace_s)
    finally:
        for copy in (paths["images.npy"], paths["ids.npy"]):  # the pool's copy is as large as the pool
            copy.unlink(missing_ok=True)

    if outcome.done is not None:
        checkpoint = load_checkpoint(paths["encoder.pt"], expected=config.encoder)
        assert checkpoint.curves is not None and checkpoint.data is not None and checkpoint.steps is not None
        shutil.rmtree(workdir, ignore_errors=True)
        return PretrainResult(
            encoder=checkpoint.encoder,
            config=config,
            curves=checkpoint.curves,
            data=checkpoint.data,
            seed=seed,
            steps=checkpoint.steps,
            seconds=float(outcome.done["seconds"]),
            device=f"{outcome.done['processes']} x {torch.device(outcome.done['device']).type}",
            resumed_from=int(outcome.done["resumed_from"]),
        )
    if outcome.failed is not None:
        raise DistributedRunError(f"distributed pretraining failed: {outcome.failed} (log: {log_path})")
    if outcome.cancelled_at is not None or outcome.stop_requested:
        shutil.rmtree(workdir, ignore_errors=True)  # the resumable state lives elsewhere (``resume``)
        step = outcome.cancelled_at if outcome.cancelled_at is not None else outcome.last_step
        raise TrainingCancelled(step)
    raise DistributedRunError(
        f"distributed pretraining exited with status {group.returncode} before finishing; "
        f"the end of {log_path}:\n{_tail(log_path)}"
    )


class _Outcome:
    """What the watcher saw of a run."""

    def __init__(self) -> None:
        self.done: dict[str, Any] | None = None
        self.failed: str | None = None
        self.cancelled_at: int | None = None
        self.last_step = 0
        self.stop_requested = False


def _watch(
    group: subprocess.Popen[bytes],
    events: EventReader,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    poll_s: float,
    grace_s: float,
) -> _Outcome:
    """Relay events until the process group ends; stop it when asked (or when relaying fails)."""
    outcome = _Outcome()
    stopping_since: float | None = None

    def relay() -> None:
        for event in events.read_new():
            kind = event.pop("event")
            if kind == "progress":
                outcome.last_step = int(event["step"])
                if progress is not None:
                    progress(TrainingProgress(**event))
            elif kind == "done":
                outcome.done = event
            elif kind == "failed":
                outcome.failed = str(event["error"])
            elif kind == "cancelled":
                outcome.cancelled_at = int(event["step"])

    try:
        while group.poll() is None:
            relay()
            if stopping_since is None and should_stop is not None and should_stop():
                outcome.stop_requested = True
                _signal(group, signal.SIGTERM)
                stopping_since = time.monotonic()
            elif stopping_since is not None and time.monotonic() - stopping_since > grace_s + 30:
                _signal(group, signal.SIGKILL)  # torchrun itself did not end them in time
            time.sleep(poll_s)
        relay()
    except BaseException:
        # A failing progress callback (or an interrupt here): the processes still stop cleanly.
        _signal(group, signal.SIGTERM)
        try:
            group.wait(timeout=grace_s + 30)
        except subprocess.TimeoutExpired:
            _signal(group, signal.SIGKILL)
            group.wait()
        raise
    finally:
        _signal(group, signal.SIGKILL)  # no process of the group outlives its launcher
    return outcome


def _signal(group: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Send ``signum`` to torchrun's process group (it leads a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group.pid, signum)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    sys.exit(main())

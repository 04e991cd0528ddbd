"""BYOL pretraining of the radio encoder (Slijepcevic et al. 2023, Grill et al. 2020).

``pretrain`` is the one explicit training function: uint8 images in, trained encoder,
curves and provenance out. The loop helpers here are shared with ``ml.finetune``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ml.augment import ImageArray, as_image_tensor, random_views
from ml.byol import BYOL, ema_tau
from ml.config import PretrainConfig, config_to_dict
from ml.device import as_layout, autocast, maybe_compile, place, resolve_device
from ml.encoder import RadioEncoder, build_encoder
from ml.errors import EmptyDataError, TrainingCancelled, TrainingDiverged
from ml.vicreg import VICReg

if TYPE_CHECKING:
    from ml.distributed import Replicas

#: One optimisation step: (indices of the batch, 0-based step, lr multiplier) -> detached loss.
StepFn = Callable[[torch.Tensor, int, float], torch.Tensor]


@dataclass(frozen=True)
class TrainingProgress:
    """What a progress callback receives.

    Attributes:
        epoch: 0-based epoch of the last step.
        step: Steps completed (1..total_steps, increasing between calls).
        total_steps: Steps the run will take if not cancelled.
        loss: Mean training loss over the steps since the previous report.
        images_per_s: Images per second since the start (each image counted once per step).
        eta_s: Estimated seconds left, from the step rate measured since this run (re)started.
        fraction: ``step / total_steps``.
        resumed_from: Step this run resumed from (0 when it started afresh).
    """

    epoch: int
    step: int
    total_steps: int
    loss: float
    images_per_s: float
    eta_s: float
    fraction: float
    resumed_from: int = 0


ProgressFn = Callable[[TrainingProgress], None]
StopFn = Callable[[], bool]


@dataclass
class TrainingCurves:
    """Loss per step and mean loss per (completed) epoch."""

    step_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class DataFingerprint:
    """Which data a model saw: counts and content hashes (SHA-256) of images and source ids."""

    n_images: int
    images_sha256: str
    source_ids_sha256: str | None = None


@dataclass
class PretrainResult:
    """A finished pretraining run.

    Attributes:
        encoder: The trained online encoder, on the training device, in eval mode.
        config: The configuration used.
        curves: Training curves.
        data: Fingerprint of the training images.
        seed: Seed of initialisation, batch order and augmentations.
        steps: Optimisation steps taken.
        seconds: Wall-clock duration of the loop (this run's part when it resumed).
        device: Device the run used, e.g. ``"cuda"``.
        resumed_from: Step the run resumed from (0 when it started afresh).
    """

    encoder: RadioEncoder
    config: PretrainConfig
    curves: TrainingCurves
    data: DataFingerprint
    seed: int
    steps: int
    seconds: float
    device: str
    resumed_from: int = 0


@dataclass(frozen=True)
class ResumeSpec:
    """Where and how often a training run saves its resumable state.

    Attributes:
        path: The state file; read at the start when it exists and matches the run, written
            atomically every ``every_s`` seconds and when the run is stopped.
        every_s: Seconds between saves while training.
    """

    path: Path
    every_s: float = 300.0


#: Kind tag of a resumable-state file (not an encoder checkpoint: see ``ml.checkpoint``).
RESUME_KIND = "rgzlabel.ml.pretrain-resume"
RESUME_FORMAT = 1


def fingerprint_data(images: ImageArray, source_ids: Sequence[int] | np.ndarray | None = None) -> DataFingerprint:
    """Hash images (and source ids) in chunks, so 100k images need no second copy in memory."""
    digest = hashlib.sha256(f"{tuple(images.shape)}|uint8".encode())
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096]
        chunk = chunk.cpu().numpy() if isinstance(chunk, torch.Tensor) else chunk
        digest.update(np.ascontiguousarray(chunk).tobytes())
    ids_hash = None if source_ids is None else fingerprint_ids(source_ids)
    return DataFingerprint(len(images), digest.hexdigest(), ids_hash)


def fingerprint_ids(source_ids: Sequence[int] | np.ndarray) -> str:
    """SHA-256 of source ids as int64: which sources a model saw, in the order it got them."""
    return hashlib.sha256(np.asarray(source_ids, dtype=np.int64).tobytes()).hexdigest()


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / decay_steps))


@dataclass(frozen=True)
class LoopPlan:
    """Batch size and step counts of a training loop."""

    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def plan_loop(n_items: int, batch_size: int, epochs: int, max_steps: int | None, warmup_epochs: int) -> LoopPlan:
    """Fix batch size and step counts; incomplete batches are dropped (BatchNorm needs >= 2).

    Raises:
        EmptyDataError: Fewer than two items.
    """
    if n_items < 2:
        raise EmptyDataError(f"need at least 2 images to train, got {n_items}")
    batch_size = min(batch_size, n_items)
    steps_per_epoch = n_items // batch_size
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    if total < 1:
        raise ValueError("the configuration gives no training steps")
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    return LoopPlan(batch_size, steps_per_epoch, total, warmup)


def run_loop(
    plan: LoopPlan,
    n_items: int,
    step_fn: StepFn,
    *,
    seed: int,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    progress_every: int,
    start_step: int = 0,
    curves: TrainingCurves | None = None,
    save_state: Callable[[int, TrainingCurves], None] | None = None,
    save_every_s: float = 300.0,
) -> TrainingCurves:
    """Run ``step_fn`` over shuffled batches, polling ``should_stop`` before every step.

    Losses stay on the device until a report is due, so a GPU is not synchronised every step.
    A run resumed at ``start_step`` (with the ``curves`` so far) takes the same batches as an
    uninterrupted one: the batch order is replayed from ``seed``. ``save_state(step, curves)``
    is called every ``save_every_s`` seconds and when the run is stopped.

    Raises:
        TrainingCancelled: ``should_stop()`` returned True.
        TrainingDiverged: A loss was NaN or infinite (found when the losses are next read:
            at the next progress report or the end of the epoch).
    """
    order = torch.Generator().manual_seed(seed)
    curves = TrainingCurves() if curves is None else curves
    pending: list[torch.Tensor] = []
    reported = start_step
    started = last_save = time.perf_counter()

    def drain() -> None:
        if pending:
            losses = torch.stack(pending).float().cpu().tolist()
            pending.clear()
            for offset, loss in enumerate(losses):
                if not math.isfinite(loss):  # every later step would be NaN too: stop, with the step
                    raise TrainingDiverged(len(curves.step_loss) + offset + 1, loss)
            curves.step_loss.extend(losses)

    def report(epoch: int, step: int) -> None:
        nonlocal reported
        drain()
        if progress is None:
            return
        window = curves.step_loss[reported:step]
        reported = step
        elapsed = time.perf_counter() - started
        done_here = step - start_step  # the rate is this run's: a resumed run did not take the earlier steps
        progress(
            TrainingProgress(
                epoch=epoch,
                step=step,
                total_steps=plan.total_steps,
                loss=float(np.mean(window)),
                images_per_s=done_here * plan.batch_size / elapsed,
                eta_s=elapsed / done_here * (plan.total_steps - step),
                fraction=step / plan.total_steps,
                resumed_from=start_step,
            )
        )

    def save(step: int) -> None:
        nonlocal last_save
        drain()
        if save_state is not None:
            save_state(step, curves)
        last_save = time.perf_counter()

    step = start_step
    for epoch in range(math.ceil(plan.total_steps / plan.steps_per_epoch)):
        permutation = torch.randperm(n_items, generator=order)  # drawn for every epoch: replayed on resume
        if (epoch + 1) * plan.steps_per_epoch <= start_step:
            continue
        for batch in range(plan.steps_per_epoch):
            if step == plan.total_steps:
                break
            if epoch * plan.steps_per_epoch + batch < start_step:
                continue
            if should_stop is not None and should_stop():
                if step > start_step:
                    save(step)
                raise TrainingCancelled(step)
            indices = permutation[batch * plan.batch_size : (batch + 1) * plan.batch_size]
            pending.append(step_fn(indices, step, warmup_cosine(step, plan.total_steps, plan.warmup_steps)))
            step += 1
            if step % progress_every == 0 or step == plan.total_steps:
                report(epoch, step)
            if save_state is not None and step < plan.total_steps and time.perf_counter() - last_save >= save_every_s:
                save(step)
        drain()  # one synchronisation per epoch for the epoch curve
        epoch_losses = curves.step_loss[epoch * plan.steps_per_epoch :]
        if len(epoch_losses) == plan.steps_per_epoch:
            curves.epoch_loss.append(float(np.mean(epoch_losses)))
    return curves


def pretrain(
    images: ImageArray,
    config: PretrainConfig,
    *,
    source_ids: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    resume: ResumeSpec | None = None,
    replicas: Replicas | None = None,
) -> PretrainResult:
    """Pretrain a radio encoder with BYOL (or VICReg, ``config.method``) on unlabelled images.

    Follows Slijepcevic et al. (2023): two random views per image (``ml.augment``),
    symmetric BYOL loss, EMA target, SGD with momentum, linear warm-up then cosine decay of
    ``config.lr = base_lr * batch / 256``. VICReg (``ml.vicreg``) takes the same views, loop
    and optimiser with its own loss and no target network.

    Args:
        images: Preprocessed uint8 cutouts (N, 150, 150); kept in device memory as uint8.
        config: Hyper-parameters (see ``ml.config.get_config``).
        source_ids: Ids of the images, hashed into the result's provenance.
        progress: Called every ``config.run.progress_every`` steps and after the last one.
        should_stop: Polled before every step; True cancels the run.
        device: Where to train; CUDA when available by default.
        seed: Seed of initialisation, batch order and augmentations.
        resume: Save a resumable state (online and target networks, optimiser, step, curves,
            augmentation RNG) there every ``every_s`` seconds and when stopped; a run started
            with the same images, config and seed continues from it. A state of another run
            is ignored (and overwritten at the next save).
        replicas: This process's place in a data-parallel run (``ml.distributed``, under
            torchrun): the global batch of ``config.batch_size`` is split across the processes,
            which take the single-process run's steps; only rank 0 calls ``progress`` and saves
            the resumable state (the same state as one process saves), and ``device`` is the
            replicas' own.

    Returns:
        The trained encoder (contiguous weights, eval mode) with curves and provenance.

    Raises:
        EmptyDataError: Fewer than two images.
        DataError: Images that are not uint8 (N, H, W) squares.
        TrainingCancelled: ``should_stop()`` returned True (in any process of a data-parallel run).
        TrainingDiverged: The loss became NaN or infinite (e.g. a learning rate too high).
        ValueError: A global batch that does not split evenly across ``replicas``, or a
            method that is not ``config.data_parallel`` with ``replicas``.
    """
    if replicas is not None:
        check_data_parallel(config)
    device = resolve_device(device) if replicas is None else replicas.device
    store = as_image_tensor(images, device)
    plan = plan_loop(len(store), config.batch_size, config.epochs, config.max_steps, config.warmup_epochs)
    data = fingerprint_data(images, source_ids)
    channels_last = config.run.channels_last
    own = slice(None) if replicas is None else replicas.share(plan.batch_size)  # this process's rows
    main = replicas is None or replicas.is_main

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ssl_model(config)
    if replicas is not None:
        replicas.synchronise_batchnorm(model)
    encoder = model.encoder
    place(model, device, channels_last)
    model.train()
    forward = maybe_compile(model if replicas is None else replicas.wrap(model), config.run.compile)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    views = torch.Generator(device=device).manual_seed(seed)
    run_key = _run_key(config, data, seed, plan)
    start_step, curves_so_far = 0, None
    if resume is not None:
        state = load_resume_state(resume.path, run_key)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            views.set_state(state["views_rng"].to(views.get_state().device))
            torch.set_rng_state(state["torch_rng"])
            start_step = int(state["step"])
            step_loss = [float(loss) for loss in state["step_loss"]][:start_step]
            # Epoch means of the completed epochs, from the step losses (a save may precede the mean).
            per = plan.steps_per_epoch
            epoch_loss = [float(np.mean(step_loss[e * per : (e + 1) * per])) for e in range(start_step // per)]
            curves_so_far = TrainingCurves(step_loss, epoch_loss)

    def save_state(step: int, curves: TrainingCurves) -> None:
        assert resume is not None
        save_resume_state(
            resume.path,
            {
                "kind": RESUME_KIND,
                "format": RESUME_FORMAT,
                "run_key": run_key,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "views_rng": views.get_state().cpu(),
                "torch_rng": torch.get_rng_state(),
                "step_loss": list(curves.step_loss[:step]),
            },
        )

    def step_fn(indices: torch.Tensor, step: int, lr_factor: float) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor
        batch = store[indices.to(device)]
        # Every process draws the views of the whole global batch (the same random numbers as
        # one process) and keeps its own rows of them.
        view_1, view_2 = (
            as_layout(random_views(batch, config.encoder.view, config.augment, views)[own], channels_last)
            for _ in range(2)
        )
        with autocast(device, config.run.amp):
            loss = forward(view_1, view_2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target(ema_tau(step + 1, plan.total_steps, config.tau, config.tau_schedule))
        return loss.detach() if replicas is None else replicas.mean(loss)

    started = time.perf_counter()
    curves = run_loop(
        plan,
        len(store),
        step_fn,
        seed=seed,
        progress=progress if main else None,
        should_stop=should_stop if replicas is None else replicas.agree(should_stop),
        progress_every=config.run.progress_every,
        start_step=start_step,
        curves=curves_so_far,
        save_state=save_state if resume is not None and main else None,
        save_every_s=resume.every_s if resume is not None else math.inf,
    )
    if replicas is not None:
        encoder = replicas.plain_encoder(encoder)  # plain BatchNorm, for embedding anywhere
    # Contiguous weights make later outputs independent of how the model was trained.
    encoder.to(memory_format=torch.contiguous_format).eval()
    return PretrainResult(
        encoder=encoder,
        config=config,
        curves=curves,
        data=data,
        seed=seed,
        steps=plan.total_steps,
        seconds=time.perf_counter() - started,
        device=str(device),
        resumed_from=start_step,
    )


def check_data_parallel(config: PretrainConfig) -> None:
    """Refuse a method whose batch cannot be split across processes (``PretrainConfig.data_parallel``).

    Raises:
        ValueError: Naming the method and why.
    """
    if not config.data_parallel:
        raise ValueError(f"{config.method} pretraining runs in one process only (its loss needs the whole batch)")


def ssl_model(config: PretrainConfig) -> BYOL | VICReg:
    """The self-supervised model of ``config.method`` around a fresh encoder of ``config.encoder``."""
    encoder = build_encoder(config.encoder)
    if config.method == "vicreg":
        return VICReg(encoder, config.projection_hidden_dim, config.projection_dim)
    if config.method != "byol":
        raise ValueError(f"unknown pretraining method {config.method!r}; choose byol or vicreg")
    return BYOL(encoder, config.projection_hidden_dim, config.projection_dim)


def _run_key(config: PretrainConfig, data: DataFingerprint, seed: int, plan: LoopPlan) -> str:
    """What must match for a saved state to continue this run: config (not run settings), data, seed."""
    learned = {k: v for k, v in config_to_dict(config).items() if k != "run"}
    text = json.dumps([learned, data.images_sha256, data.source_ids_sha256, seed, plan.total_steps], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_resume_state(path: Path, state: dict[str, Any]) -> Path:
    """Write a resumable state atomically (a stop mid-write leaves the previous one intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_resume_state(path: Path, run_key: str | None = None) -> dict[str, Any] | None:
    """The saved state at ``path`` if it exists, is readable and belongs to the run ``run_key``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable state only means starting afresh
        return None
    if not isinstance(state, dict) or state.get("kind") != RESUME_KIND or state.get("format") != RESUME_FORMAT:
        return None
    if run_key is not None and state.get("run_key") != run_key:
        return None
    return state

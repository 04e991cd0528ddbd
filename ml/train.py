"""BYOL pretraining of the radio encoder (Slijepcevic et al. 2023, Grill et al. 2020).

``pretrain`` is the one explicit training function: uint8 images in, trained encoder,
curves and provenance out. The loop helpers here are shared with ``ml.finetune``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ml.augment import ImageArray, as_image_tensor, random_views
from ml.byol import BYOL, ema_tau
from ml.config import PretrainConfig
from ml.device import as_layout, autocast, maybe_compile, place, resolve_device
from ml.encoder import RadioEncoder, build_encoder
from ml.errors import EmptyDataError, TrainingCancelled

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
        eta_s: Estimated seconds left.
        fraction: ``step / total_steps``.
    """

    epoch: int
    step: int
    total_steps: int
    loss: float
    images_per_s: float
    eta_s: float
    fraction: float


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
        seconds: Wall-clock duration of the loop.
        device: Device the run used, e.g. ``"cuda"``.
    """

    encoder: RadioEncoder
    config: PretrainConfig
    curves: TrainingCurves
    data: DataFingerprint
    seed: int
    steps: int
    seconds: float
    device: str


def fingerprint_data(images: ImageArray, source_ids: Sequence[int] | None = None) -> DataFingerprint:
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
) -> TrainingCurves:
    """Run ``step_fn`` over shuffled batches, polling ``should_stop`` before every step.

    Losses stay on the device until a report is due, so a GPU is not synchronised every step.

    Raises:
        TrainingCancelled: ``should_stop()`` returned True.
    """
    order = torch.Generator().manual_seed(seed)
    curves = TrainingCurves()
    pending: list[torch.Tensor] = []
    reported = 0
    started = time.perf_counter()

    def drain() -> None:
        if pending:
            curves.step_loss.extend(torch.stack(pending).float().cpu().tolist())
            pending.clear()

    def report(epoch: int, step: int) -> None:
        nonlocal reported
        drain()
        if progress is None:
            return
        window = curves.step_loss[reported:step]
        reported = step
        elapsed = time.perf_counter() - started
        progress(
            TrainingProgress(
                epoch=epoch,
                step=step,
                total_steps=plan.total_steps,
                loss=float(np.mean(window)),
                images_per_s=step * plan.batch_size / elapsed,
                eta_s=elapsed / step * (plan.total_steps - step),
                fraction=step / plan.total_steps,
            )
        )

    step = 0
    for epoch in range(math.ceil(plan.total_steps / plan.steps_per_epoch)):
        permutation = torch.randperm(n_items, generator=order)
        for batch in range(plan.steps_per_epoch):
            if step == plan.total_steps:
                break
            if should_stop is not None and should_stop():
                raise TrainingCancelled(step)
            indices = permutation[batch * plan.batch_size : (batch + 1) * plan.batch_size]
            pending.append(step_fn(indices, step, warmup_cosine(step, plan.total_steps, plan.warmup_steps)))
            step += 1
            if step % progress_every == 0 or step == plan.total_steps:
                report(epoch, step)
        drain()  # one synchronisation per epoch for the epoch curve
        epoch_losses = curves.step_loss[epoch * plan.steps_per_epoch :]
        if len(epoch_losses) == plan.steps_per_epoch:
            curves.epoch_loss.append(float(np.mean(epoch_losses)))
    return curves


def pretrain(
    images: ImageArray,
    config: PretrainConfig,
    *,
    source_ids: Sequence[int] | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> PretrainResult:
    """Pretrain a radio encoder with BYOL on unlabelled images.

    Follows Slijepcevic et al. (2023): two random views per image (``ml.augment``),
    symmetric BYOL loss, EMA target, SGD with momentum, linear warm-up then cosine decay of
    ``config.lr = base_lr * batch / 256``.

    Args:
        images: Preprocessed uint8 cutouts (N, 150, 150); kept in device memory as uint8.
        config: Hyper-parameters (see ``ml.config.get_config``).
        source_ids: Ids of the images, hashed into the result's provenance.
        progress: Called every ``config.run.progress_every`` steps and after the last one.
        should_stop: Polled before every step; True cancels the run.
        device: Where to train; CUDA when available by default.
        seed: Seed of initialisation, batch order and augmentations.

    Returns:
        The trained encoder (contiguous weights, eval mode) with curves and provenance.

    Raises:
        EmptyDataError: Fewer than two images.
        DataError: Images that are not uint8 (N, H, W) squares.
        TrainingCancelled: ``should_stop()`` returned True.
    """
    device = resolve_device(device)
    store = as_image_tensor(images, device)
    plan = plan_loop(len(store), config.batch_size, config.epochs, config.max_steps, config.warmup_epochs)
    data = fingerprint_data(images, source_ids)
    channels_last = config.run.channels_last

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BYOL(build_encoder(config.encoder), config.projection_hidden_dim, config.projection_dim)
    encoder = model.encoder
    place(model, device, channels_last)
    model.train()
    forward = maybe_compile(model, config.run.compile)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    views = torch.Generator(device=device).manual_seed(seed)

    def step_fn(indices: torch.Tensor, step: int, lr_factor: float) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor
        batch = store[indices.to(device)]
        view_1, view_2 = (
            as_layout(random_views(batch, config.encoder.view, config.augment, views), channels_last) for _ in range(2)
        )
        with autocast(device, config.run.amp):
            loss = forward(view_1, view_2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target(ema_tau(step + 1, plan.total_steps, config.tau, config.tau_schedule))
        return loss.detach()

    started = time.perf_counter()
    curves = run_loop(
        plan,
        len(store),
        step_fn,
        seed=seed,
        progress=progress,
        should_stop=should_stop,
        progress_every=config.run.progress_every,
    )
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
    )

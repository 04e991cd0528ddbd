"""Fine-tuning of a pretrained encoder, and the supervised-from-scratch baseline.

Slijepcevic et al. (2023) fine-tune all blocks with AdamW, layer-wise learning-rate decay
0.75, lr 2.5e-4 on the head, weight decay 0.05, label smoothing 0.1 and a cosine schedule.
Their public code applies a softmax before the cross-entropy loss; here the loss takes the
raw logits. The supervised baseline is the same procedure from a randomly initialised
encoder.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import ImageArray, TestViews, as_image_tensor, random_views
from ml.classifier import check_labels
from ml.config import EncoderConfig, FinetuneConfig
from ml.device import as_layout, autocast, maybe_compile, place, resolve_device
from ml.embed import map_batches
from ml.encoder import RadioEncoder, build_encoder
from ml.errors import EmptyDataError, ShapeMismatchError
from ml.train import ProgressFn, StopFn, TrainingCurves, plan_loop, run_loop


class EncoderClassifier(nn.Module):
    """An encoder with a linear classification head producing logits."""

    def __init__(self, encoder: RadioEncoder, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, n_classes)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) of normalised views (N, 1, S, S)."""
        return self.head(self.encoder(views))  # type: ignore[no-any-return]


@dataclass
class FinetuneResult:
    """A finished fine-tuning run: the model (eval mode), its curves and settings."""

    model: EncoderClassifier
    config: FinetuneConfig
    curves: TrainingCurves
    n_classes: int
    seed: int
    seconds: float


def layerwise_param_groups(
    model: EncoderClassifier, lr: float, layer_decay: float, weight_decay: float
) -> list[dict[str, object]]:
    """AdamW parameter groups with layer-wise lr decay (BEiT-style, as in the paper).

    The head gets ``lr``; the k-th block below it gets ``lr * layer_decay**k``. Biases and
    normalisation weights (1-D tensors) get no weight decay.
    """
    blocks: list[nn.Module] = [*model.encoder.stages(), model.head]
    groups: list[dict[str, object]] = []
    for depth, block in enumerate(reversed(blocks)):
        scale = layer_decay**depth
        params = [p for p in block.parameters() if p.requires_grad]
        for decay, members in (
            (weight_decay, [p for p in params if p.ndim > 1]),
            (0.0, [p for p in params if p.ndim <= 1]),
        ):
            if members:
                groups.append(
                    {
                        "params": members,
                        "lr": lr * scale,
                        "base_lr": lr * scale,
                        "weight_decay": decay,
                    }
                )
    return groups


def finetune(
    encoder: RadioEncoder,
    images: ImageArray,
    labels: Sequence[int] | np.ndarray,
    config: FinetuneConfig,
    *,
    n_classes: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune a copy of ``encoder`` with a new linear head on labelled images.

    Args:
        encoder: Pretrained (or, for the baseline, fresh) encoder; it is not modified.
        images: uint8 cutouts (N, 150, 150).
        labels: Class indices 0..n_classes-1, one per image.
        config: Hyper-parameters (``ml.config.get_finetune_config``).
        n_classes: Number of classes; ``max(labels) + 1`` by default.
        progress: As in ``ml.train.pretrain``.
        should_stop: As in ``ml.train.pretrain``.
        device: Where to train; CUDA when available by default.
        seed: Seed of head initialisation, batch order and augmentations.

    Raises:
        DataError: Empty, single-class or mismatched inputs, labels outside 0..n_classes-1.
        TrainingCancelled: ``should_stop()`` returned True.
    """
    device = resolve_device(device)
    store = as_image_tensor(images, device)
    targets_np = check_labels(labels, len(store)).astype(np.int64)
    n_classes = n_classes or int(targets_np.max()) + 1
    if targets_np.min() < 0 or targets_np.max() >= n_classes:
        raise ShapeMismatchError(f"labels must lie in 0..{n_classes - 1}")
    targets = torch.as_tensor(targets_np, device=device)
    plan = plan_loop(len(store), config.batch_size, config.epochs, config.max_steps, config.warmup_epochs)
    channels_last = config.run.channels_last

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncoderClassifier(copy.deepcopy(encoder), n_classes)
    place(model, device, channels_last)
    model.train()
    forward = maybe_compile(model, config.run.compile)
    optimizer = torch.optim.AdamW(layerwise_param_groups(model, config.lr, config.layer_decay, config.weight_decay))
    views = torch.Generator(device=device).manual_seed(seed)

    def step_fn(indices: torch.Tensor, step: int, lr_factor: float) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        indices = indices.to(device)
        batch = random_views(store[indices], encoder.config.view, config.augment, views)
        with autocast(device, config.run.amp):
            logits = forward(as_layout(batch, channels_last))
        loss = F.cross_entropy(logits.float(), targets[indices], label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    model.to(memory_format=torch.contiguous_format).eval()
    return FinetuneResult(model, config, curves, n_classes, seed, time.perf_counter() - started)


def train_supervised_baseline(
    images: ImageArray,
    labels: Sequence[int] | np.ndarray,
    config: FinetuneConfig,
    encoder_config: EncoderConfig,
    *,
    n_classes: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> FinetuneResult:
    """The paper's supervised baseline: ``finetune`` from a randomly initialised encoder.

    Arguments are those of ``finetune``; ``seed`` also seeds the encoder's initialisation.
    """
    return finetune(
        build_encoder(encoder_config, seed=seed),
        images,
        labels,
        config,
        n_classes=n_classes,
        progress=progress,
        should_stop=should_stop,
        device=device,
        seed=seed,
    )


def predict_proba(
    model: EncoderClassifier,
    images: ImageArray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    views: TestViews = "centre",
) -> np.ndarray:
    """Class probabilities (N, n_classes) of a fine-tuned model on the test view.

    ``views="dihedral"`` averages the probabilities over the eight rotations/flips of it.
    """
    if len(images) == 0:
        raise EmptyDataError("no images to classify")
    device = resolve_device(device)
    model.eval().to(device)
    out = np.empty((len(images), model.head.out_features), dtype=np.float32)

    def probabilities(views: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(views), dim=1)

    view = model.encoder.config.view
    return map_batches(probabilities, images, view, out, batch_size=batch_size, device=device, views=views)

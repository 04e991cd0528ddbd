"""Fine-tuning of a pretrained encoder, and the supervised-from-scratch baseline.

Slijepcevic et al. (2023) fine-tune all blocks with AdamW, layer-wise learning-rate decay
0.75, lr 2.5e-4 on the head, weight decay 0.05, label smoothing 0.1 and a cosine schedule.
Their public code applies a softmax before the cross-entropy loss; here the loss takes the
raw logits. The supervised baseline is the same procedure from a randomly initialised
encoder.

With ``FinetuneConfig.unlabelled_weight > 0`` fine-tuning is semi-supervised as in FixMatch
(Sohn et al. 2020): every step also draws ``unlabelled_ratio * batch_size`` images of the
unlabelled pool, pseudo-labels each by the model's confident prediction on a weak view and
trains the strong view of it towards that label (``consistency_loss``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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
    """A finished fine-tuning run: the model (eval mode), its curves and settings.

    ``curves`` hold the total loss (supervised plus weighted consistency loss).
    """

    model: EncoderClassifier
    config: FinetuneConfig
    curves: TrainingCurves
    n_classes: int
    seed: int
    seconds: float
    #: Per step, the fraction of unlabelled images whose weak view passed the confidence
    #: threshold (empty for a supervised run).
    mask_rate: list[float] = field(default_factory=list)


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


#: Mixed into ``seed`` for the order of the unlabelled images, so that it is not the stream
#: ``ml.train.run_loop`` draws the labelled batches from.
_UNLABELLED_STREAM = 0x5EED_F1C5


def consistency_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabelled loss and its mask rate.

    The pseudo-label of each sample is the argmax of ``softmax(weak_logits)``; samples whose
    largest probability reaches ``threshold`` contribute the cross-entropy of their strong
    logits against it, the others zero, and the sum is divided by the whole batch (not by the
    confident samples), so the loss grows with the share of confident predictions as in
    Sohn et al. (2020). No gradient reaches ``weak_logits``.

    Args:
        weak_logits: Logits (N, C) of the weak views.
        strong_logits: Logits (N, C) of the strong views of the same images.
        threshold: Confidence threshold tau in [0, 1].

    Returns:
        The loss (a scalar with the gradient of ``strong_logits``) and the fraction of the N
        samples that passed the threshold (a detached scalar).
    """
    if weak_logits.shape != strong_logits.shape:
        raise ShapeMismatchError(
            f"weak {tuple(weak_logits.shape)} and strong {tuple(strong_logits.shape)} logits differ"
        )
    with torch.no_grad():
        confidence, pseudo_labels = torch.softmax(weak_logits.detach().float(), dim=1).max(dim=1)
        mask = (confidence >= threshold).float()
    per_sample = F.cross_entropy(strong_logits.float(), pseudo_labels, reduction="none")
    return (per_sample * mask).mean(), mask.mean()


def _index_batches(n_items: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``size`` indices into ``n_items``: shuffled passes, one after another."""
    pending = torch.empty(0, dtype=torch.int64)
    while True:
        while len(pending) < size:
            pending = torch.cat([pending, torch.randperm(n_items, generator=generator)])
        yield pending[:size]
        pending = pending[size:]


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
    unlabelled: ImageArray | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``encoder`` with a new linear head on labelled images.

    With ``config.unlabelled_weight > 0`` each step also trains on ``unlabelled`` images
    (FixMatch, see ``consistency_loss``); the number of steps still follows the labelled
    images and ``config.epochs``.

    Args:
        encoder: Pretrained (or, for the baseline, fresh) encoder; it is not modified.
        images: uint8 cutouts (N, 150, 150).
        labels: Class indices 0..n_classes-1, one per image.
        config: Hyper-parameters (``ml.config.get_finetune_config``).
        n_classes: Number of classes; ``max(labels) + 1`` by default.
        progress: As in ``ml.train.pretrain``.
        should_stop: As in ``ml.train.pretrain``.
        device: Where to train; CUDA when available by default.
        seed: Seed of head initialisation, batch order and augmentations (and of the
            draw of unlabelled images).
        unlabelled: uint8 cutouts (M, H, W) of the unlabelled pool, used only when
            ``config.unlabelled_weight > 0``; they stay where they are (a memory map is
            fine) and each step's draw is moved to ``device``.

    Raises:
        DataError: Empty, single-class or mismatched inputs, labels outside 0..n_classes-1,
            unlabelled images that are not a uint8 (M, H, W) stack.
        ValueError: ``config.unlabelled_weight > 0`` without unlabelled images, a negative
            ``unlabelled_weight`` or an ``unlabelled_ratio`` below 1.
        TrainingCancelled: ``should_stop()`` returned True.
    """
    if config.unlabelled_weight < 0:
        raise ValueError(f"unlabelled_weight must be >= 0, got {config.unlabelled_weight}")
    semi_supervised = config.unlabelled_weight > 0
    if semi_supervised and unlabelled is None:
        raise ValueError(
            f"unlabelled_weight={config.unlabelled_weight} needs unlabelled images: pass unlabelled=..., "
            "or set unlabelled_weight=0 for supervised fine-tuning"
        )
    if semi_supervised and config.unlabelled_ratio < 1:
        raise ValueError(f"unlabelled_ratio must be >= 1, got {config.unlabelled_ratio}")
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
    view = encoder.config.view
    mask_rates: list[torch.Tensor] = []
    pool: torch.Tensor | None = None
    draws: Iterator[torch.Tensor] = iter(())
    if semi_supervised:
        assert unlabelled is not None
        # The pool stays where it is (a numpy array or memory map on the CPU): only each
        # step's draw goes to the training device.
        pool = as_image_tensor(unlabelled, unlabelled.device if isinstance(unlabelled, torch.Tensor) else "cpu")
        order = torch.Generator().manual_seed(seed ^ _UNLABELLED_STREAM)
        draws = _index_batches(len(pool), config.unlabelled_ratio * plan.batch_size, order)

    def step_fn(indices: torch.Tensor, step: int, lr_factor: float) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        indices = indices.to(device)
        batch = random_views(store[indices], view, config.augment, views)
        n_labelled = len(batch)
        if pool is not None:
            drawn = pool[next(draws).to(pool.device)].to(device, non_blocking=True)
            weak = random_views(drawn, view, config.augment, views)
            strong = random_views(drawn, view, config.strong_augment, views)
            # One forward pass over labelled, weak and strong views together, as FixMatch's
            # reference code does: BatchNorm then normalises every view with statistics of the
            # whole (1 + 2 mu) B batch, steadier than those of a few labelled images, and its
            # running statistics (used at inference) follow the pool the model will predict on.
            # Pseudo-labels from a separate eval-mode pass would instead use running statistics
            # that lag behind the weights and differ from the train-mode statistics the strong
            # views are normalised with. The weak logits are detached in consistency_loss.
            batch = torch.cat([batch, weak, strong])
        with autocast(device, config.run.amp):
            logits = forward(as_layout(batch, channels_last))
        loss = F.cross_entropy(logits[:n_labelled].float(), targets[indices], label_smoothing=config.label_smoothing)
        if pool is not None:
            weak_logits, strong_logits = logits[n_labelled:].chunk(2)
            unlabelled_loss, mask_rate = consistency_loss(weak_logits, strong_logits, config.confidence_threshold)
            loss = loss + config.unlabelled_weight * unlabelled_loss
            mask_rates.append(mask_rate)
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
    seconds = time.perf_counter() - started
    mask_rate = torch.stack(mask_rates).cpu().tolist() if mask_rates else []
    return FinetuneResult(model, config, curves, n_classes, seed, seconds, mask_rate)


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

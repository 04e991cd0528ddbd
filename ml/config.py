"""Typed configurations and named presets for pretraining, fine-tuning and classifiers.

Presets:
    ``paper``: the hyper-parameters of Slijepcevic et al. (2023, arXiv:2305.16127), a GPU job
        (about 27 images/s for a BYOL step on this 2-core CPU: days for 300 epochs).
    ``cpu-quick``: the same recipe with a stride-2 stem and a 64-pixel view of the same
        70-pixel field, about 5x cheaper per image, sized for ~20 minutes on 2 CPU cores over
        ~3-4k images.
    ``cpu-p4m``: ``cpu-quick`` with the rotation/flip-invariant p4m encoder (``EncoderConfig``).
    ``cpu-radio``: ``cpu-quick`` with radio-specific views (wider crops, beam-like blur, noise).
    ``cpu-vicreg``: ``cpu-quick`` trained with VICReg (``ml.vicreg``) instead of BYOL.
    ``tiny``: a few steps on small views, for tests.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

#: Pixel statistics of the preprocessed RGZ images on a 0..1 scale (the paper's normalisation).
PIXEL_MEAN = 0.008008896
PIXEL_STD = 0.05303395


@dataclass(frozen=True)
class ViewConfig:
    """What the encoder sees of a 150x150 preprocessed image.

    Attributes:
        crop_size: Side of the central field of view, in input pixels (70 x 1.8" = 126").
        input_size: Side of the tensor handed to the encoder; smaller than ``crop_size``
            resamples the same field with fewer pixels (cheaper, for CPU training).
        mean: Normalisation mean on 0..1 pixels.
        std: Normalisation standard deviation on 0..1 pixels.
    """

    crop_size: int = 70
    input_size: int = 70
    mean: float = PIXEL_MEAN
    std: float = PIXEL_STD


@dataclass(frozen=True)
class EncoderConfig:
    """The radio encoder: a one-channel ResNet-18, or a rotation/flip-invariant p4m ResNet.

    Attributes:
        arch: ``"resnet18"``: the paper's torchvision ResNet-18 with a 3x3 stem.
            ``"p4m-resnet10"``: a ResNet of exact p4m group convolutions (``ml.equivariant``):
            a lifting stem and one residual block per stage, whose features are unchanged
            (to float precision) by any 90-degree rotation or flip of the input view.
        stem_stride: 1 in the paper; 2 quarters the cost (ResNet-18: a stride-2 stem; p4m:
            one more exact 2x downsampling after the stem).
        view: The input geometry and normalisation the encoder was trained with.
        width: ``p4m-resnet10`` only: group channels of the first stage (each carries 8
            orientations; the stages have ``width * (1, 2, 4, 8)``, the features ``8 * width``).
    """

    arch: Literal["resnet18", "p4m-resnet10"] = "resnet18"
    stem_stride: int = 1
    view: ViewConfig = field(default_factory=ViewConfig)
    width: int = 16

    @property
    def feature_dim(self) -> int:
        """Width of the pooled representation (512 for ResNet-18, ``8 * width`` for p4m)."""
        return 8 * self.width if self.arch == "p4m-resnet10" else 512

    @property
    def invariant(self) -> bool:
        """Whether the features are exactly invariant to the 8 rotations/flips of the view."""
        return self.arch == "p4m-resnet10"


@dataclass(frozen=True)
class AugmentConfig:
    """Random view parameters (the paper's BYOL augmentations).

    Attributes:
        rotate: Rotate by a uniform random angle in [0, 360) degrees.
        crop_scale: Area fraction range of the random resized crop of the field of view.
        crop_ratio: Aspect ratio range of that crop.
        hflip_p: Probability of a horizontal flip.
        vflip_p: Probability of a vertical flip.
        brightness: Brightness factor drawn from [1 - b, 1 + b].
        contrast: Contrast factor drawn from [1 - c, 1 + c].
        jitter_p: Probability of applying brightness and contrast jitter.
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's standard deviation, in output pixels.
        noise_p: Probability of additive Gaussian noise (a survey's rms on the clipped background).
        noise_std: Range of that noise's standard deviation, as a fraction of the image's [0, 1] range.
    """

    rotate: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    jitter_p: float = 0.8
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_p: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class RunConfig:
    """Settings of a training loop that do not change what is learned.

    Attributes:
        amp: bf16 autocast on CUDA (ignored on CPU).
        channels_last: Channels-last memory layout (faster on CUDA and on this CPU).
        compile: Wrap the model in ``torch.compile``.
        progress_every: Call the progress callback every this many steps (and at the end).
    """

    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    progress_every: int = 10


@dataclass(frozen=True)
class PretrainConfig:
    """BYOL pretraining (Grill et al. 2020) as configured by Slijepcevic et al. (2023).

    Attributes:
        name: Preset name, kept in checkpoints.
        encoder: The encoder to train.
        augment: The random views.
        projection_hidden_dim: Hidden width of projector and predictor.
        projection_dim: Output width of projector and predictor.
        batch_size: Images per step (each seen as two views).
        epochs: Passes over the data.
        max_steps: Stop after this many steps even if epochs remain (None: no cap).
        warmup_epochs: Linear learning-rate warm-up before the cosine decay.
        base_lr: Learning rate per 256 images; the rate used is ``base_lr * batch / 256``.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        tau: EMA rate of the target network.
        tau_schedule: ``"constant"`` or ``"cosine"`` (tau rises to 1 over training).
        run: Loop settings.
        method: ``"byol"`` (the paper's) or ``"vicreg"`` (``ml.vicreg``: no target network; the
            projection widths are its expander's, ``tau`` is unused).
    """

    name: str = "paper"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    projection_hidden_dim: int = 512
    projection_dim: int = 256
    batch_size: int = 1024
    epochs: int = 300
    max_steps: int | None = None
    warmup_epochs: int = 10
    base_lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 1.5e-6
    tau: float = 0.996
    tau_schedule: Literal["constant", "cosine"] = "constant"
    run: RunConfig = field(default_factory=RunConfig)
    method: Literal["byol", "vicreg"] = "byol"

    @property
    def data_parallel(self) -> bool:
        """Whether the batch may be split across processes with the same steps as one process.

        BYOL's loss is a mean over images, so it may; VICReg's variance and covariance terms are
        statistics of the whole batch, so split batches would train another model.
        """
        return self.method == "byol"

    @property
    def lr(self) -> float:
        """Peak learning rate after the linear scaling rule."""
        return self.base_lr * self.batch_size / 256


@dataclass(frozen=True)
class FinetuneConfig:
    """Full fine-tuning of the encoder with a linear head (the paper's fine-tuning recipe).

    Attributes:
        name: Preset name.
        augment: Random views of the labelled images.
        batch_size: Images per step.
        epochs: Passes over the labelled images.
        max_steps: Optional cap on the number of steps.
        warmup_epochs: Linear warm-up before the cosine decay.
        lr: AdamW learning rate of the head; earlier blocks get ``lr * layer_decay**depth``.
        layer_decay: Layer-wise learning-rate decay per block.
        weight_decay: AdamW weight decay (not applied to biases and normalisation).
        label_smoothing: Cross-entropy label smoothing.
        run: Loop settings.
        unlabelled_weight: Weight (FixMatch's lambda) of the consistency loss on unlabelled
            images (Sohn et al. 2020, ``ml.finetune.consistency_loss``); 0 trains on the
            labels alone (the paper's recipe), above 0 ``finetune`` needs unlabelled images.
        confidence_threshold: FixMatch's tau: an unlabelled image counts only when the
            largest class probability of its weak view reaches this.
        unlabelled_ratio: FixMatch's mu: unlabelled images per labelled image in a step
            (a step sees ``batch_size`` labelled and ``unlabelled_ratio * batch_size``
            unlabelled images, each of those as a weak and a strong view).
        strong_augment: Random strong views of the unlabelled images (the weak views are
            ``augment``). Radio sources have no orientation, so rotations and flips leave
            the class alone; the strength comes from a wider crop (down to half the field's
            area, so at least ~70 % of its side stays in view), brightness and contrast
            jitter on every view at +-60 %, and blur on half of them. No cutout: hiding a
            lobe can turn one morphology into another.
    """

    name: str = "paper"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 64
    epochs: int = 100
    max_steps: int | None = None
    warmup_epochs: int = 5
    lr: float = 2.5e-4
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    run: RunConfig = field(default_factory=RunConfig)
    unlabelled_weight: float = 0.0
    confidence_threshold: float = 0.95
    unlabelled_ratio: int = 3
    strong_augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            crop_scale=(0.5, 1.0), brightness=0.6, contrast=0.6, jitter_p=1.0, blur_p=0.5, blur_sigma=(0.1, 2.0)
        )
    )


@dataclass(frozen=True)
class ClassifierConfig:
    """Few-label logistic regression on frozen, standardised embeddings.

    Attributes:
        C: Inverse regularisation strength.
        max_iter: Solver iterations.
        calibration_folds: Folds of the sigmoid calibration.
        calibrate_min_per_class: Calibrate only when every class has at least this many
            labels; ``None`` (the default) never calibrates. Sigmoid calibration on 3 folds
            of a few dozen labels inverted or flattened the live classifier (down to 27.5 %
            on a balanced gold set); on validation data calibrated random sampling was 4.7
            (PCA) and 6.0 (encoder) points worse, docs/benchmarks.md "Active-learning
            decisions on validation data" (an earlier test-set figure first decided it).
        class_weight: ``"balanced"`` weighs each class by the inverse of its label count, so
            a queue that served mostly one class does not tilt the classifier towards it
            (``None``: every label counts the same, the paper's linear probe).
        max_dim: Embeddings wider than this are projected on the leading principal
            directions of the labelled rows (at most ``max_dim``) before the logistic
            regression; ``None`` never projects. Up to ``max_dim`` labels this is the same
            model, fitted faster; past it, fewer directions.
    """

    C: float = 1.0
    max_iter: int = 2000
    calibration_folds: int = 3
    calibrate_min_per_class: int | None = None
    class_weight: str | None = "balanced"
    max_dim: int | None = None


#: Widest embedding the labelling loop's classifiers (retrain, committee, the guard's replays) fit
#: unprojected; None: never project. Measured on validation folds of the MiraBest training set with
#: ``python -m bench.live_fit`` (docs/benchmarks.md, "The live classifier on the 512-d encoder"):
#: projecting the cpu-quick encoder's 512 dimensions to 64 saved 10-45 % of a fit's time but cost
#: 0.9 points at 145 labels and 3.1 at 291, so the shipped loop does not project. The paper's
#: linear probe (ml.evaluation) never projects.
LIVE_MAX_DIM: int | None = None
#: The labelling loop's classifier.
LIVE_CLASSIFIER = ClassifierConfig(max_dim=LIVE_MAX_DIM)

_CPU_ENCODER = EncoderConfig(stem_stride=2, view=ViewConfig(input_size=64))
#: The cpu-quick geometry with the p4m-invariant encoder; width 12 (96 features): its BYOL pretraining took
#: 1.4x the ResNet-18's time side by side on one CPU thread each (docs/benchmarks.md, "Issue 12, third day").
_CPU_P4M_ENCODER = EncoderConfig(arch="p4m-resnet10", stem_stride=2, width=12, view=ViewConfig(input_size=64))
_TINY_ENCODER = EncoderConfig(stem_stride=2, view=ViewConfig(input_size=32))
_TINY_RUN = RunConfig(progress_every=1)

_CPU_QUICK = PretrainConfig(
    name="cpu-quick",
    encoder=_CPU_ENCODER,
    batch_size=128,
    epochs=25,
    warmup_epochs=2,
    tau_schedule="cosine",
)

#: Radio-specific views (issue 12): wider crops, a beam-like blur on half the views, and noise at
#: 1-5 % of the peak on half of them (a survey's rms on the clipped background).
_RADIO_AUGMENT = AugmentConfig(
    crop_scale=(0.5, 1.0), blur_p=0.5, blur_sigma=(0.5, 2.0), noise_p=0.5, noise_std=(0.01, 0.05)
)

PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "paper": PretrainConfig(),
    "cpu-quick": _CPU_QUICK,
    "cpu-p4m": dataclasses.replace(_CPU_QUICK, name="cpu-p4m", encoder=_CPU_P4M_ENCODER),
    "cpu-radio": dataclasses.replace(_CPU_QUICK, name="cpu-radio", augment=_RADIO_AUGMENT),
    # VICReg (issue 12): no target network; an expander of 2048 (the paper's 8192 is for ImageNet).
    # Plain SGD, not the paper's LARS: the loss diverged within 10 steps at base_lr 0.2 and 0.08
    # (4 epochs over 512 MiraBest training images, batch 128) and fell steadily at 0.04; 0.03 keeps a margin.
    # 12 epochs, as measured (docs/benchmarks.md "Issue 12, fourth day"; 21-23 minutes on one thread
    # beside other work over the 3,094-image pool).
    "cpu-vicreg": dataclasses.replace(
        _CPU_QUICK,
        name="cpu-vicreg",
        method="vicreg",
        epochs=12,
        projection_hidden_dim=2048,
        projection_dim=2048,
        base_lr=0.03,
    ),
    "tiny": PretrainConfig(name="tiny", encoder=_TINY_ENCODER, batch_size=8, epochs=2, warmup_epochs=1, run=_TINY_RUN),
}

FINETUNE_PRESETS: dict[str, FinetuneConfig] = {
    "paper": FinetuneConfig(),
    "cpu-quick": FinetuneConfig(name="cpu-quick", epochs=40, warmup_epochs=2),
    # cpu-quick plus FixMatch consistency on the unlabelled pool (finetune(..., unlabelled=...)).
    "cpu-semisup": FinetuneConfig(name="cpu-semisup", epochs=40, warmup_epochs=2, unlabelled_weight=1.0),
    "tiny": FinetuneConfig(name="tiny", batch_size=8, epochs=2, warmup_epochs=1, run=_TINY_RUN),
}

ConfigT = TypeVar("ConfigT")


def get_config(name: str, **overrides: Any) -> PretrainConfig:
    """Return the named pretraining preset with ``overrides`` applied.

    Nested fields are reached with a double underscore, e.g.
    ``get_config("paper", epochs=50, encoder__stem_stride=2)``.

    Raises:
        KeyError: Unknown preset name.
        TypeError: Unknown field name.
    """
    return replace_nested(_preset(PRETRAIN_PRESETS, name), **overrides)


def get_finetune_config(name: str, **overrides: Any) -> FinetuneConfig:
    """Return the named fine-tuning preset with ``overrides`` applied (as ``get_config``)."""
    return replace_nested(_preset(FINETUNE_PRESETS, name), **overrides)


def _preset(presets: dict[str, ConfigT], name: str) -> ConfigT:
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return presets[name]


def replace_nested(config: ConfigT, **overrides: Any) -> ConfigT:
    """``dataclasses.replace`` that also reaches nested dataclasses via ``a__b=value``."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition("__")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    for head, sub in nested.items():
        if not hasattr(config, head):
            raise TypeError(f"{type(config).__name__} has no field {head!r}")
        direct[head] = replace_nested(getattr(config, head), **sub)
    return dataclasses.replace(config, **direct)  # type: ignore[type-var]


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON- and ``torch.load(weights_only=True)``-safe dict of a config dataclass."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """Rebuild a config dataclass from ``config_to_dict`` output.

    Raises:
        TypeError: ``data`` has fields the dataclass does not know (e.g. written by newer code).
    """
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        kind = _dataclass_in(hints[key])
        if kind is not None and isinstance(value, dict):
            value = config_from_dict(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass in a type hint such as ``ViewConfig`` or ``ViewConfig | None``."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if get_origin(hint) in (Union, types.UnionType):
        for arg in get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                return arg
    return None

"""The radio encoders: the one-channel ResNet-18 of Slijepcevic et al. (2023) for 70x70 cutouts,
and a ResNet of exact p4m group convolutions whose features no rotation by 90 degrees or flip
of the view changes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ml.config import EncoderConfig
from ml.equivariant import GroupBatchNorm, GroupConv2d, LiftingConv2d, group_pool

#: Architectures ``EncoderConfig.arch`` may name.
ARCHITECTURES = ("resnet18", "p4m-resnet10")


class RadioEncoder(nn.Module):
    """An encoder of normalised one-channel views (N, 1, S, S) into pooled features.

    ``resnet18``: as in the paper's public code, the ImageNet 7x7 stride-2 stem is replaced by
    a 3x3 stride-1 convolution (the 70-pixel inputs are small) and the max-pool is kept. A
    stride-2 stem (``EncoderConfig.stem_stride``) is the cheap CPU variant.

    ``p4m-resnet10``: :class:`P4MResNet`.

    Attributes:
        config: The configuration the encoder was built from (stored in checkpoints).
        feature_dim: Width of the output features.
        invariant: Whether the features are exactly invariant to the dihedral poses of the view
            (then averaging over those poses at test time changes nothing).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.arch not in ARCHITECTURES:
            raise ValueError(f"unknown encoder architecture {config.arch!r}; known: {', '.join(ARCHITECTURES)}")
        self.config = config
        self.feature_dim = config.feature_dim
        self.invariant = config.invariant
        self.backbone: nn.Module
        if config.arch == "p4m-resnet10":
            self.backbone = P4MResNet(config.width, extra_downsample=config.stem_stride > 1)
            return
        backbone = torchvision.models.resnet18(weights=None)
        backbone.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=config.stem_stride, padding=1, bias=False)
        nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.fc = nn.Identity()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised views (N, 1, S, S) to features (N, feature_dim)."""
        return self.backbone(images)  # type: ignore[no-any-return]

    def stages(self) -> list[nn.Module]:
        """The blocks from input to output (stem, then one per stage), for layer-wise lr decay."""
        b = self.backbone
        if isinstance(b, P4MResNet):
            return [b.stem, *b.stages]
        assert isinstance(b, torchvision.models.ResNet)
        return [nn.ModuleList([b.conv1, b.bn1]), b.layer1, b.layer2, b.layer3, b.layer4]


def group_downsample(y: torch.Tensor) -> torch.Tensor:
    """Halve the spatial size of group feature maps (N, C, 8, H, W) exactly equivariantly.

    An even axis is averaged over aligned pairs (a quarter turn or flip maps pairs onto pairs);
    an odd one over windows of 3 at stride 2 with one pixel of padding, whose first and last
    windows are mirror images. So 70 -> 35 -> 18 -> 9 -> 5 and 64 -> 32 -> 16 -> 8 -> 4 both
    commute with the group's action (:func:`ml.equivariant.transform_group_tensor`).
    """
    n, c, g, h, w = y.shape  # g: 8 orientations, or 1 for a plain image (a trivial group axis)
    if h != w:
        raise ValueError(f"p4m feature maps must be square; got {h}x{w}")
    flat = y.reshape(n, c * g, h, w)
    if h % 2 == 0:
        out = F.avg_pool2d(flat, kernel_size=2, stride=2)
    else:
        out = F.avg_pool2d(flat, kernel_size=3, stride=2, padding=1, count_include_pad=False)
    return out.view(n, c, g, *out.shape[-2:])


class P4MBlock(nn.Module):
    """A residual block of two 3x3 group convolutions (a 1x1 one on the shortcut when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GroupConv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = GroupBatchNorm(out_channels)
        self.conv2 = GroupConv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = GroupBatchNorm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                GroupConv2d(in_channels, out_channels, 1, bias=False), GroupBatchNorm(out_channels)
            )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(y)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(y))


class P4MStage(nn.Module):
    """An exact 2x downsampling (except in the first stage) followed by one :class:`P4MBlock`."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.block = P4MBlock(in_channels, out_channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.block(group_downsample(y) if self.downsample else y)


class P4MStem(nn.Module):
    """Lifting 3x3 convolution, batch norm and ReLU, then an exact 2x downsampling.

    With ``extra_downsample`` the image is first downsampled 2x the same exact way (a
    one-channel image is cheap to pool; ``8 * width`` feature maps at full resolution are not).
    """

    def __init__(self, width: int, extra_downsample: bool) -> None:
        super().__init__()
        self.lift = LiftingConv2d(1, width, 3, padding=1, bias=False)
        self.bn = GroupBatchNorm(width)
        self.extra_downsample = extra_downsample

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.extra_downsample:  # a plain image is a group map with one orientation slot
            images = group_downsample(images.unsqueeze(2)).squeeze(2)
        return group_downsample(F.relu(self.bn(self.lift(images))))


class P4MResNet(nn.Module):
    """A ResNet-10 of p4m group convolutions with invariant pooled features.

    The stem and stages mirror the ResNet-18's geometry (a stem that reduces the view 2x, or 4x
    with ``extra_downsample``, then stages at 1, 1/2, 1/4 and 1/8 of that) with one residual block
    per stage instead of two. Every layer commutes exactly with the 8 rotations/flips of the view
    (odd kernels, symmetric padding, stride-1 convolutions and :func:`group_downsample`); the
    features are the maximum over the 8 orientations averaged over space
    (:func:`ml.equivariant.group_pool`), so they are invariant. Widths ``width * (1, 2, 4, 8)``
    group channels cost about as much as the ResNet-18's ``(64, 128, 256, 512)`` at ``width = 8``
    per block; at ``width = 16`` each block costs about four times as much, with half the blocks.

    Args:
        width: Group channels of the first stage; the features have ``8 * width`` dimensions.
        extra_downsample: Downsample twice after the stem (the stride-2 CPU variant).
    """

    def __init__(self, width: int, extra_downsample: bool = False) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"p4m width must be positive; got {width}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = P4MStem(width, extra_downsample)
        inputs = [width, *widths[:-1]]
        self.stages = nn.ModuleList(
            P4MStage(c_in, c_out, downsample=i > 0) for i, (c_in, c_out) in enumerate(zip(inputs, widths, strict=True))
        )
        for module in self.modules():
            if isinstance(module, (LiftingConv2d, GroupConv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map views (N, 1, S, S) to invariant features (N, 8 * width)."""
        y = self.stem(images)
        for stage in self.stages:
            y = stage(y)
        return group_pool(y, "max")


def build_encoder(config: EncoderConfig, seed: int | None = None) -> RadioEncoder:
    """Build a randomly initialised encoder.

    Args:
        config: Architecture and input geometry.
        seed: When given, the initial weights depend only on it (the global RNG is untouched).
    """
    if seed is None:
        return RadioEncoder(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RadioEncoder(config)

"""The radio encoder of Slijepcevic et al. (2023): a one-channel ResNet-18 for 70x70 cutouts."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ml.config import EncoderConfig


class RadioEncoder(nn.Module):
    """ResNet-18 with a one-channel 3x3 stem, no classifier, global-average-pooled features.

    As in the paper's public code, the ImageNet 7x7 stride-2 stem is replaced by a 3x3
    stride-1 convolution (the 70-pixel inputs are small) and the max-pool is kept. A
    stride-2 stem (``EncoderConfig.stem_stride``) is the cheap CPU variant.

    Attributes:
        config: The configuration the encoder was built from (stored in checkpoints).
        feature_dim: Width of the output features (512).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.arch != "resnet18":
            raise ValueError(f"unknown encoder architecture {config.arch!r}")
        self.config = config
        self.feature_dim = config.feature_dim
        backbone = torchvision.models.resnet18(weights=None)
        backbone.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=config.stem_stride, padding=1, bias=False)
        nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.fc = nn.Identity()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised views (N, 1, S, S) to features (N, 512)."""
        return self.backbone(images)  # type: ignore[no-any-return]

    def stages(self) -> list[nn.Module]:
        """The blocks from input to output (stem, layer1..layer4), for layer-wise lr decay."""
        b = self.backbone
        return [nn.ModuleList([b.conv1, b.bn1]), b.layer1, b.layer2, b.layer3, b.layer4]


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

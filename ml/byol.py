"""BYOL building blocks (Grill et al. 2020) as used by Slijepcevic et al. (2023).

Loss convention: for each of the two view pairs the loss is ``2 - 2 cos(p, z)`` (the squared
distance of the L2-normalised vectors, as in the BYOL paper), summed over both pairs and
averaged over the batch. It lies in [0, 8] and is 0 exactly when each online prediction
points along the target projection of the other view.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ml.encoder import RadioEncoder


class MLPHead(nn.Sequential):
    """Linear-BatchNorm-ReLU-Linear: the BYOL projector and predictor."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def byol_loss(
    online_1: torch.Tensor, online_2: torch.Tensor, target_1: torch.Tensor, target_2: torch.Tensor
) -> torch.Tensor:
    """Symmetric BYOL loss: view 1's prediction against view 2's target and vice versa.

    Args:
        online_1: Online predictions of view 1, (N, D).
        online_2: Online predictions of view 2, (N, D).
        target_1: Target projections of view 1, (N, D) (no gradient is taken through them).
        target_2: Target projections of view 2, (N, D).

    Returns:
        Scalar ``mean(2 - 2 cos(online_1, target_2)) + mean(2 - 2 cos(online_2, target_1))``.
    """
    cross_1 = F.cosine_similarity(online_1, target_2.detach(), dim=-1)
    cross_2 = F.cosine_similarity(online_2, target_1.detach(), dim=-1)
    return (4 - 2 * cross_1 - 2 * cross_2).mean()


@torch.no_grad()
def update_ema(online: nn.Module, target: nn.Module, tau: float) -> None:
    """Move ``target`` parameters towards ``online``: ``t <- tau * t + (1 - tau) * o``.

    Buffers (BatchNorm statistics) are not averaged: the target runs in training mode and
    normalises with batch statistics, as in BYOL.
    """
    for target_param, online_param in zip(target.parameters(), online.parameters(), strict=True):
        target_param.lerp_(online_param.detach(), 1.0 - tau)


def ema_tau(step: int, total_steps: int, base_tau: float, schedule: str) -> float:
    """Target EMA rate at ``step``: constant, or cosine from ``base_tau`` up to 1 (BYOL)."""
    if schedule == "constant" or total_steps <= 0:
        return base_tau
    if schedule != "cosine":
        raise ValueError(f"unknown tau schedule {schedule!r}")
    return 1 - (1 - base_tau) * (math.cos(math.pi * step / total_steps) + 1) / 2


class BYOL(nn.Module):
    """Online encoder + projector + predictor, and an EMA target encoder + projector.

    Args:
        encoder: The online encoder; the target starts as its copy.
        hidden_dim: Hidden width of projector and predictor (512 in the paper).
        projection_dim: Output width of projector and predictor (256 in the paper).
    """

    def __init__(self, encoder: RadioEncoder, hidden_dim: int = 512, projection_dim: int = 256):
        super().__init__()
        self.encoder = encoder
        self.projector = MLPHead(encoder.feature_dim, hidden_dim, projection_dim)
        self.predictor = MLPHead(projection_dim, hidden_dim, projection_dim)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for param in [*self.target_encoder.parameters(), *self.target_projector.parameters()]:
            param.requires_grad_(False)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        """Return the symmetric BYOL loss of two batches of views of the same images."""
        # Each view is its own BatchNorm batch, as in the paper's public code and BYOL.
        online_1, online_2 = (self.predictor(self.projector(self.encoder(v))) for v in (view_1, view_2))
        with torch.no_grad():
            target_1, target_2 = (self.target_projector(self.target_encoder(v)) for v in (view_1, view_2))
        return byol_loss(online_1, online_2, target_1, target_2)

    def update_target(self, tau: float) -> None:
        """EMA step of the target encoder and projector."""
        update_ema(self.encoder, self.target_encoder, tau)
        update_ema(self.projector, self.target_projector, tau)

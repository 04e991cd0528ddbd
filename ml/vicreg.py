"""VICReg (Bardes, Ponce & LeCun 2022): self-supervision without a target network.

BYOL needs its slowly moving target network to learn anything, which on a short CPU run
spends much of the budget bootstrapping. VICReg instead asks the two views' embeddings to
agree (invariance) while each batch keeps every dimension spread out (variance) and the
dimensions decorrelated (covariance), so it learns from the first step and has no second
network to run. A candidate encoder recipe of issue 12 (``PretrainConfig.method``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ml.encoder import RadioEncoder


class Expander(nn.Sequential):
    """VICReg's expander: two Linear-BatchNorm-ReLU layers, then a linear output."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def _off_diagonal_power(covariance: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of a square matrix, over its width."""
    width = covariance.shape[0]
    return (covariance.pow(2).sum() - covariance.diagonal().pow(2).sum()) / width


def vicreg_loss(
    z_1: torch.Tensor,
    z_2: torch.Tensor,
    *,
    invariance: float = 25.0,
    variance: float = 25.0,
    covariance: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """The VICReg loss of two batches of embeddings of the same images (the paper's weights).

    ``invariance * mse(z_1, z_2) + variance * (hinge(1 - std) of each side, averaged)
    + covariance * (squared off-diagonal covariance of each side, over the width)``,
    computed in float32 whatever the inputs' precision.

    Args:
        z_1: (N, D) embeddings of view 1, N >= 2.
        z_2: (N, D) embeddings of view 2.

    Raises:
        ValueError: Different shapes, or fewer than two rows (no batch statistics).
    """
    if z_1.shape != z_2.shape or z_1.ndim != 2:
        raise ValueError(f"two (N, D) batches of the same shape needed, got {tuple(z_1.shape)} and {tuple(z_2.shape)}")
    n = z_1.shape[0]
    if n < 2:
        raise ValueError("VICReg needs at least two rows per batch")
    z_1, z_2 = z_1.float(), z_2.float()
    agreement = F.mse_loss(z_1, z_2)
    spread = torch.zeros((), device=z_1.device)
    decorrelation = torch.zeros((), device=z_1.device)
    for z in (z_1, z_2):
        centred = z - z.mean(dim=0)
        spread = spread + F.relu(1 - torch.sqrt(centred.var(dim=0) + eps)).mean() / 2
        decorrelation = decorrelation + _off_diagonal_power(centred.T @ centred / (n - 1))
    return invariance * agreement + variance * spread + covariance * decorrelation


class VICReg(nn.Module):
    """Encoder + expander trained with :func:`vicreg_loss`; the same interface as ``ml.byol.BYOL``.

    Args:
        encoder: The encoder to train.
        hidden_dim: Hidden width of the expander.
        projection_dim: Output width of the expander.
    """

    def __init__(self, encoder: RadioEncoder, hidden_dim: int = 2048, projection_dim: int = 2048):
        super().__init__()
        self.encoder = encoder
        self.expander = Expander(encoder.feature_dim, hidden_dim, projection_dim)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        """Return the VICReg loss of two batches of views of the same images."""
        return vicreg_loss(*(self.expander(self.encoder(view)) for view in (view_1, view_2)))

    def update_target(self, tau: float) -> None:
        """Nothing to do: VICReg has no target network (kept so the training loop is shared)."""

"""Exact p4m (dihedral D4) equivariant convolutions on the pixel grid.

The group has 8 elements ``g = r + 4 * m`` (``r`` in 0..3, ``m`` in 0..1) acting on the last two
axes of a tensor as ``T_g(x) = rot90(flip(x, W) if m else x, r)``, i.e. ``R^r F^m`` with ``R`` one
counter-clockwise quarter turn (``torch.rot90`` over (H, W)) and ``F`` a horizontal flip. Since
``F R F = R^-1``, ``(R^a F^m)(R^b F^n) = R^(a + (-1)^m b) F^(m xor n)``.

Group feature maps have shape (N, C, 8, H, W). The group acts on them by the regular
representation: ``(L_h y)[:, :, h g] = T_h(y[:, :, g])``, i.e. the slice of element ``g`` is moved
to position ``h g`` and transformed spatially by ``T_h`` (:func:`transform_group_tensor`).
:class:`LiftingConv2d` and :class:`GroupConv2d` satisfy ``layer(L_h y) == L_h layer(y)`` (with
``L_h = T_h`` on plain images), transforming their filters rather than the image, and
:func:`group_pool` turns group feature maps into invariant (N, C) features.

Exactness needs the sampling grid to be symmetric under the group: odd kernels, symmetric
padding and, for ``stride > 1``, ``(size + 2 * padding - kernel_size) % stride == 0`` for both H
and W (then the first and last sampled positions are mirror images). Otherwise rotating the
input shifts the sampled grid and equivariance only holds approximately.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Number of elements of p4m (4 rotations x optional flip).
GROUP_ORDER = 8


def transform(x: Tensor, g: int) -> Tensor:
    """Apply group element ``g`` to the last two (spatial) axes of ``x``.

    Args:
        x: Tensor of shape (..., H, W), e.g. images (N, C, H, W) or filters (C_out, C_in, k, k).
        g: Element index ``r + 4 * m``: flip the W axis if ``m``, then rotate by ``r`` quarter turns.

    Returns:
        The transformed tensor, of shape (..., W, H) for odd ``r``.
    """
    rotations, flipped = g % 4, g >= 4
    if flipped:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, rotations, dims=(-2, -1))


def group_elements() -> list[Callable[[Tensor], Tensor]]:
    """The 8 elements of p4m as functions on (..., H, W) tensors, in index order ``r + 4 * m``."""
    return [partial(transform, g=g) for g in range(GROUP_ORDER)]


def _compose(a: int, b: int) -> int:
    """Index of ``a b`` (apply ``b`` first): ``R^i F^m R^j F^n = R^(i + (-1)^m j) F^(m xor n)``."""
    (i, m), (j, n) = (a % 4, a // 4), (b % 4, b // 4)
    return (i + (-j if m else j)) % 4 + 4 * (m ^ n)


#: ``COMPOSITION[a][b]`` is the index of ``a b``: ``transform(transform(x, b), a) == transform(x, a b)``.
COMPOSITION: tuple[tuple[int, ...], ...] = tuple(
    tuple(_compose(a, b) for b in range(GROUP_ORDER)) for a in range(GROUP_ORDER)
)
#: ``INVERSE[g]`` is the index of ``g^-1``: rotations invert their angle, reflections are involutions.
INVERSE: tuple[int, ...] = tuple(COMPOSITION[g].index(0) for g in range(GROUP_ORDER))


def composition_table() -> Tensor:
    """The (8, 8) int64 Cayley table: entry ``[a, b]`` is the index of ``a b`` (``b`` applied first)."""
    return torch.tensor(COMPOSITION, dtype=torch.long)


def inverse_table() -> Tensor:
    """The (8,) int64 table of inverses: entry ``[g]`` is the index of ``g^-1``."""
    return torch.tensor(INVERSE, dtype=torch.long)


def transform_group_tensor(y: Tensor, h: int) -> Tensor:
    """The regular action ``L_h`` on group feature maps (..., 8, H, W).

    Args:
        y: Tensor whose third-from-last axis is the group axis.
        h: Element index.

    Returns:
        ``out[..., g, :, :] = T_h(y[..., h^-1 g, :, :])``.
    """
    source = [COMPOSITION[INVERSE[h]][g] for g in range(GROUP_ORDER)]
    return transform(y[..., source, :, :], h)


def _check_geometry(kernel_size: int, padding: int | Literal["same"]) -> int:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"p4m convolutions need an odd kernel size (a centre pixel); got {kernel_size}")
    if padding == "same":
        return kernel_size // 2
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int or 'same'; got {padding!r}")
    return padding


class _P4MConv(nn.Module):
    """Shared parameters and forward pass; subclasses build the expanded Conv2d weight."""

    def __init__(self, weight_shape: tuple[int, ...], stride: int, padding: int | Literal["same"], bias: bool) -> None:
        super().__init__()
        self.out_channels, self.kernel_size = weight_shape[0], weight_shape[-1]
        self.padding = _check_geometry(self.kernel_size, padding)
        if stride < 1:
            raise ValueError(f"stride must be positive; got {stride}")
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def expanded_weight(self) -> Tensor:
        """The (C_out * 8, C_in_total, k, k) Conv2d weight holding every transformed filter."""
        raise NotImplementedError

    def _convolve(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.repeat_interleave(GROUP_ORDER)
        out = F.conv2d(x, self.expanded_weight(), bias, stride=self.stride, padding=self.padding)
        return out.view(out.shape[0], self.out_channels, GROUP_ORDER, *out.shape[-2:])

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"weight={tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, bias={bias}"


class LiftingConv2d(_P4MConv):
    """Lift images (N, C_in, H, W) to group feature maps (N, C_out, 8, H', W').

    ``out[:, :, g] = conv2d(x, T_g(w))``, so ``layer(T_h x) == transform_group_tensor(layer(x), h)``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (each with 8 group slices).
        kernel_size: Odd filter size.
        stride: Convolution stride (see the module docstring for the exactness condition).
        padding: Zero padding per side, or ``"same"`` (``kernel_size // 2``).
        bias: Add one learned bias per output channel, shared across the group axis.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | Literal["same"] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), stride, padding, bias)

    def expanded_weight(self) -> Tensor:
        """Filters ``T_g(w)`` stacked as output channel ``c * 8 + g``."""
        weights = torch.stack([transform(self.weight, g) for g in range(GROUP_ORDER)], dim=1)
        return weights.flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (N, C_in, H, W) to (N, C_out, 8, H', W')."""
        return self._convolve(x)


class GroupConv2d(_P4MConv):
    """p4m group convolution (N, C_in, 8, H, W) -> (N, C_out, 8, H', W').

    ``out[:, :, g] = sum_u conv2d(y[:, :, u], T_g(w[:, :, g^-1 u]))``: the filter for output element
    ``g`` is the base filter with its group axis permuted by ``g`` and its spatial axes transformed by
    ``T_g``, so ``layer(L_h y) == L_h layer(y)`` with ``L_h`` = :func:`transform_group_tensor`.

    Args:
        in_channels: Input channels (each with 8 group slices).
        out_channels: Output channels (each with 8 group slices).
        kernel_size: Odd filter size.
        stride: Convolution stride (see the module docstring for the exactness condition).
        padding: Zero padding per side, or ``"same"`` (``kernel_size // 2``).
        bias: Add one learned bias per output channel, shared across the group axis.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | Literal["same"] = 0,
        bias: bool = True,
    ) -> None:
        shape = (out_channels, in_channels, GROUP_ORDER, kernel_size, kernel_size)
        super().__init__(shape, stride, padding, bias)

    def expanded_weight(self) -> Tensor:
        """Filters ``L_g(w)`` stacked as output channel ``c * 8 + g`` over input channel ``c' * 8 + u``."""
        weights = torch.stack([transform_group_tensor(self.weight, g) for g in range(GROUP_ORDER)], dim=1)
        return weights.flatten(0, 1).flatten(1, 2)

    def forward(self, y: Tensor) -> Tensor:
        """Map (N, C_in, 8, H, W) to (N, C_out, 8, H', W')."""
        return self._convolve(y.flatten(1, 2))


class GroupBatchNorm(nn.BatchNorm3d):
    """Batch norm for group feature maps (N, C, 8, H, W), one mean/variance/affine per channel.

    It is ``nn.BatchNorm3d`` with the group axis as depth: statistics are pooled over the batch, the
    group axis and space, which the group only permutes, so normalisation commutes with ``L_h``
    (exactly in eval mode; in training mode when the whole batch is transformed alike).
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5 or input.shape[2] != GROUP_ORDER:
            raise ValueError(f"expected (N, C, {GROUP_ORDER}, H, W) input; got shape {tuple(input.shape)}")


def group_pool(y: Tensor, reduce: Literal["max", "mean"] = "max") -> Tensor:
    """Invariant features: reduce (N, C, 8, H, W) over the group axis, then average over space.

    Args:
        y: Group feature maps.
        reduce: ``"max"`` or ``"mean"`` over the 8 group slices.

    Returns:
        (N, C) features unchanged by ``L_h`` for every ``h``.
    """
    if reduce == "max":
        pooled = y.amax(dim=2)
    elif reduce == "mean":
        pooled = y.mean(dim=2)
    else:
        raise ValueError(f"reduce must be 'max' or 'mean'; got {reduce!r}")
    return pooled.mean(dim=(-2, -1))

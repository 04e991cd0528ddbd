"""Exact p4m equivariance of ml.equivariant: lifting conv, group conv, batch norm and invariant pooling."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import nn

from ml.equivariant import (
    GROUP_ORDER,
    GroupBatchNorm,
    GroupConv2d,
    LiftingConv2d,
    composition_table,
    group_elements,
    group_pool,
    inverse_table,
    transform,
    transform_group_tensor,
)

ELEMENTS = range(GROUP_ORDER)
Padding = int | Literal["same"]
Reduce = Literal["max", "mean"]


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def test_the_table_is_a_group_that_matches_the_action_on_an_image() -> None:
    table, inverse = composition_table(), inverse_table()
    assert table.shape == (8, 8) and table.dtype == torch.long
    for row in table:  # closure, and each row is a permutation (Latin square)
        assert sorted(row.tolist()) == list(ELEMENTS)
    assert table[0].tolist() == list(ELEMENTS) and table[:, 0].tolist() == list(ELEMENTS)
    for g in ELEMENTS:
        assert table[g, inverse[g]] == 0 and table[inverse[g], g] == 0
        for h in ELEMENTS:
            for k in ELEMENTS:
                assert table[table[g, h], k] == table[g, table[h, k]]
    image = torch.randn(2, 3, 5, 7)
    actions = group_elements()
    images = [act(image) for act in actions]
    assert all(not torch.equal(images[a], images[b]) for a in ELEMENTS for b in ELEMENTS if a != b)
    for a in ELEMENTS:
        assert torch.equal(actions[inverse[a]](images[a]), image)
        for b in ELEMENTS:
            assert torch.equal(transform(transform(image, b), a), images[table[a, b]])


def test_transform_group_tensor_is_a_group_action() -> None:
    y = torch.randn(1, 2, 8, 5, 5)
    table = composition_table()
    for a in ELEMENTS:
        for b in ELEMENTS:
            expected = transform_group_tensor(y, int(table[a, b]))
            assert torch.equal(transform_group_tensor(transform_group_tensor(y, b), a), expected)


@pytest.mark.parametrize(
    ("size", "kernel_size", "stride", "padding"),
    [((9, 7), 3, 1, "same"), ((9, 9), 5, 1, 0), ((11, 11), 3, 2, 1), ((13, 9), 5, 2, 2)],
)
def test_lifting_conv_is_equivariant(size: tuple[int, int], kernel_size: int, stride: int, padding: Padding) -> None:
    layer = LiftingConv2d(3, 4, kernel_size, stride=stride, padding=padding).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    out = layer(x)
    assert out.shape[:3] == (2, 4, 8)
    for g in ELEMENTS:
        torch.testing.assert_close(layer(transform(x, g)), transform_group_tensor(out, g), atol=1e-10, rtol=0)


@pytest.mark.parametrize(("kernel_size", "stride", "padding"), [(3, 1, "same"), (3, 1, 0), (3, 2, 1), (1, 1, 0)])
def test_group_conv_is_equivariant(kernel_size: int, stride: int, padding: Padding) -> None:
    layer = GroupConv2d(3, 2, kernel_size, stride=stride, padding=padding).double()
    y = torch.randn(2, 3, 8, 9, 9, dtype=torch.float64)
    out = layer(y)
    assert out.shape[:3] == (2, 2, 8)
    for g in ELEMENTS:
        torch.testing.assert_close(
            layer(transform_group_tensor(y, g)), transform_group_tensor(out, g), atol=1e-10, rtol=0
        )


def stack(train: bool) -> nn.Sequential:
    model = nn.Sequential(
        LiftingConv2d(1, 4, 5, padding="same"),
        GroupBatchNorm(4),
        nn.ReLU(),
        GroupConv2d(4, 6, 3, stride=2, padding=1),
        GroupBatchNorm(6),
        nn.ReLU(),
        GroupConv2d(6, 5, 3, padding="same", bias=False),
    )
    return model.train(train)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_pooled_features_of_a_stack_are_invariant(dtype: torch.dtype, atol: float, train: bool, reduce: Reduce) -> None:
    model = stack(train).to(dtype)
    x = torch.randn(3, 1, 15, 15, dtype=dtype)  # (15 + 2 - 3) % 2 == 0: the strided grid is symmetric
    features = group_pool(model(x), reduce)
    assert features.shape == (3, 5) and features.std() > 0.01
    for g in ELEMENTS:
        torch.testing.assert_close(group_pool(model(transform(x, g)), reduce), features, atol=atol, rtol=0)


def test_a_plain_conv_stack_fails_the_same_invariance_check() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1)).double()
    x = torch.randn(3, 1, 15, 15, dtype=torch.float64)
    features = model(x).mean(dim=(-2, -1))
    for g in range(1, GROUP_ORDER):
        with pytest.raises(AssertionError):
            torch.testing.assert_close(model(transform(x, g)).mean(dim=(-2, -1)), features, atol=1e-10, rtol=0)


def test_an_incompatible_stride_breaks_exact_equivariance() -> None:
    layer = LiftingConv2d(1, 2, 3, stride=2, padding=1).double()
    x = torch.randn(1, 1, 10, 10, dtype=torch.float64)  # (10 + 2 - 3) % 2 == 1: the grid is not symmetric
    with pytest.raises(AssertionError):
        torch.testing.assert_close(layer(transform(x, 1)), transform_group_tensor(layer(x), 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel_size", [2, 4, 0])
def test_an_even_kernel_size_is_refused(kernel_size: int) -> None:
    for layer in (LiftingConv2d, GroupConv2d):
        with pytest.raises(ValueError, match="odd kernel size"):
            layer(1, 1, kernel_size)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="padding"):
        LiftingConv2d(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        GroupConv2d(1, 1, 3, stride=0)
    with pytest.raises(ValueError, match="reduce"):
        group_pool(torch.zeros(1, 1, 8, 2, 2), "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected"):
        GroupBatchNorm(2)(torch.zeros(2, 2, 4, 3, 3))

"""Data-parallel pretraining over several processes (PyTorch DistributedDataParallel).

Under torchrun (``python -m ml.pretrain_ddp``) every process runs ``ml.train.pretrain`` with
its ``Replicas``, and together they take the steps of the single-process run with the same
seed and global batch:

- every process draws the same batch order (``ml.train.run_loop``'s seeded permutation) and
  the same random views of the whole global batch, and trains on its contiguous share of it
  (a ``DistributedSampler`` would give each process other images than one process sees; the
  views cost little next to the network);
- BatchNorm normalises each view over the global batch: torch's ``SyncBatchNorm`` on CUDA,
  ``GlobalBatchNorm`` here on the CPU, where ``SyncBatchNorm`` does not run;
- DDP averages the gradients, which with the synchronised normalisation is the gradient of the
  global batch's mean loss; the optimiser and the EMA target step then do the same arithmetic
  on the same weights in every process, so the weights stay equal without being sent;
- the loss reported is the mean over processes, the global batch's mean;
- the processes agree on stopping before every step, so they all stop after the same one.

Only rank 0 reports progress and writes resumable states and checkpoints; their format does
not depend on the number of processes (the weights are saved from the unwrapped modules).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import ProcessGroup
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from ml.encoder import RadioEncoder


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every process gets the
    gradient of the sum of all processes' losses with respect to its own contribution."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sum_over_processes(tensor: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """The sum of ``tensor`` over the processes of ``group``, differentiable (see ``GlobalBatchNorm``)."""
    return _SumOverProcesses.apply(tensor, group)  # type: ignore[no-any-return]


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the batches of all processes together.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so the CPU (gloo) runs use this: the sums
    and squared deviations are all-reduced with autograd-aware collectives, whose backward
    all-reduces the gradients, so each process gets the gradient of the global batch as
    ``SyncBatchNorm`` gives it. Parameters and buffers are named as in ``nn.BatchNorm2d``, so
    state dicts load either way. In eval mode, or without a process group, it is plain BatchNorm.

    Args:
        num_features: Channels.
        eps: Added to the variance.
        momentum: Running statistics' update rate (None: cumulative average).
        affine: Learn a scale and shift.
        track_running_stats: Keep running mean and (unbiased) variance.
        group: The process group to normalise over (None: all processes).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        group: ProcessGroup | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.group = group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an (N, C, ...) input, got {input.dim()} dimensions")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input`` (N, C, ...) with the statistics of every process's batch."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        local_count = input.new_tensor([input.numel() / input.shape[1]])
        # Two passes (mean, then squared deviations) keep the variance as exact as F.batch_norm's.
        totals = sum_over_processes(torch.cat([input.sum(dims), local_count]), self.group)
        count = totals[-1].detach()
        mean = totals[:-1] / count
        centred = input - mean.view(shape)
        squares = sum_over_processes(centred.square().sum(dims), self.group)
        variance = squares / count
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._track(mean.detach(), variance.detach(), float(count))
        return output

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, variance: torch.Tensor, count: float) -> None:
        """Update the running statistics as ``F.batch_norm`` does (unbiased variance)."""
        assert self.num_batches_tracked is not None and self.running_mean is not None
        assert self.running_var is not None
        self.num_batches_tracked.add_(1)
        rate = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, rate)
        self.running_var.lerp_(variance * count / max(count - 1.0, 1.0), rate)


def to_global_batchnorm(module: nn.Module, group: ProcessGroup | None = None) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a ``GlobalBatchNorm`` sharing its weights and buffers.

    Like ``nn.SyncBatchNorm.convert_sync_batchnorm``: the parameters are the same objects
    (their ``requires_grad`` is kept), and the module is changed in place unless it is itself
    a BatchNorm.
    """
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, group
        )
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, to_global_batchnorm(child, group))
    return converted


@dataclass
class Replicas:
    """This process's place in a data-parallel run, and the collectives ``pretrain`` needs.

    Attributes:
        rank: This process's rank (0 reports progress and writes files).
        world_size: Number of processes.
        device: This process's device (``cuda:LOCAL_RANK`` on GPUs, else the CPU).
        control: A gloo group for agreeing on stopping (host-side, so no GPU synchronisation).
        statistics: The group ``GlobalBatchNorm`` normalises over on the CPU (None on CUDA).
    """

    rank: int
    world_size: int
    device: torch.device
    control: ProcessGroup
    statistics: ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that reports progress and writes files."""
        return self.rank == 0

    def share(self, batch_size: int) -> slice:
        """This process's rows of a global batch of ``batch_size``.

        Raises:
            ValueError: The batch does not split evenly across the processes.
        """
        if batch_size % self.world_size:
            raise ValueError(
                f"the global batch of {batch_size} images does not split evenly across {self.world_size} "
                "processes: choose a batch size divisible by the number of processes"
            )
        per_process = batch_size // self.world_size
        return slice(self.rank * per_process, (self.rank + 1) * per_process)

    def synchronise_batchnorm(self, model: nn.Module) -> nn.Module:
        """Make every BatchNorm of ``model`` (in place) normalise over the global batch."""
        if self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return to_global_batchnorm(model, self.statistics)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel, which averages the gradients over the processes.

        Buffers are not sent before every forward pass: with synchronised BatchNorm the running
        statistics are computed from the same global figures in every process.
        """
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (stays on the device: no synchronisation)."""
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def agree(self, should_stop: Callable[[], bool] | None) -> Callable[[], bool]:
        """A stop poll that is True in every process as soon as it is True in any of them."""

        def agreed() -> bool:
            flag = torch.tensor([int(should_stop is not None and should_stop())])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
            return bool(flag.item())

        return agreed

    def barrier(self) -> None:
        """Wait until every process reaches this point (e.g. until rank 0 has written its files)."""
        dist.barrier(group=self.control)

    def plain_encoder(self, encoder: RadioEncoder) -> RadioEncoder:
        """A copy of ``encoder`` with plain BatchNorm, on this process's device."""
        with torch.random.fork_rng(devices=[]):  # its random initialisation is overwritten at once
            plain = RadioEncoder(encoder.config)
        plain.load_state_dict(encoder.state_dict())
        return plain.to(self.device)


def start_replicas(device: str | None = None, backend: str | None = None) -> Replicas | None:
    """Join the process group torchrun set up; None when this is the only process.

    Args:
        device: ``"cpu"``, ``"cuda"`` (each process takes ``cuda:LOCAL_RANK``) or None/"auto"
            (CUDA when present).
        backend: The collective backend; by default NCCL on CUDA and gloo on the CPU.

    Raises:
        ValueError: More processes on this node than visible GPUs, or an unknown device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or "auto"
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(kind).type  # "cuda:1" still means one GPU per process
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {local_rank} of this node has no GPU: {torch.cuda.device_count()} visible "
                "(run at most one process per GPU)"
            )
        torch.cuda.set_device(local_rank)
        placed = torch.device("cuda", local_rank)
    elif kind == "cpu":
        placed = torch.device("cpu")
    else:
        raise ValueError(f"distributed pretraining runs on 'cpu' or 'cuda', not {device!r}")
    dist.init_process_group(backend or ("nccl" if kind == "cuda" else "gloo"))
    control = _gloo_group()
    statistics = _gloo_group() if kind == "cpu" else None
    return Replicas(rank=rank, world_size=world_size, device=placed, control=control, statistics=statistics)


def _gloo_group() -> ProcessGroup:
    """A new gloo group of all processes (each is a member, so it is never ``NON_GROUP_MEMBER``)."""
    group = dist.new_group(backend="gloo")
    assert isinstance(group, ProcessGroup)
    return group


def stop_replicas() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

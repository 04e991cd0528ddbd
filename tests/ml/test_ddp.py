"""Pretraining in two gloo processes on the CPU takes the single-process run's steps.

``ml.pretrain_ddp`` under torchrun (as on a multi-GPU machine, with gloo instead of NCCL) is
compared with ``ml.train.pretrain`` in this process: same seed, same global batch of 8.

Tolerances. Float sums taken in another order move the single-process run itself, and BYOL
on 8 images magnifies that rounding from step to step: with the tiny preset's learning rate,
changing only the thread count (1 vs 2) moved step 3's loss by 8e-3 and the embeddings to a
cosine of 0.89. At a tenth of that rate (``CONFIG``) the same change moved the losses by at
most 1e-5 in steps 1-2 and 1.3e-3 in steps 3-4, the embeddings to a cosine of 0.9998. Two
processes sum in another order too, so steps 1-2 must agree within 2e-4, steps 3-4 within
1e-2, the embeddings to a cosine of 0.999. At this rate two processes without synchronised
BatchNorm are off by 0.09 at step 1, and with summed instead of averaged gradients by 1.5e-3
at step 2 and 0.027 at step 3 (2-core shared machine, 2026-12-05).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.checkpoint import load_checkpoint, save_checkpoint
from ml.config import get_config
from ml.embed import embed
from ml.encoder import build_encoder
from ml.errors import DistributedRunError, TrainingCancelled
from ml.pretrain_ddp import launch_pretraining
from ml.train import PretrainResult, ResumeSpec, TrainingProgress, load_resume_state, pretrain

ROOT = Path(__file__).resolve().parents[2]
#: Global batch 8 (4 per process), 2 epochs of 2 steps, 32-pixel views, a tenth of the tiny learning rate.
CONFIG = get_config("tiny", max_steps=4, base_lr=0.02)
SEED = 3
EARLY_STEPS, EARLY_TOLERANCE, LATE_TOLERANCE = 2, 2e-4, 1e-2


def assert_same_curve(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected)
    np.testing.assert_allclose(got[:EARLY_STEPS], expected[:EARLY_STEPS], rtol=0, atol=EARLY_TOLERANCE)
    np.testing.assert_allclose(got, expected, rtol=0, atol=LATE_TOLERANCE)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 150, 150), dtype=np.uint8)


@pytest.fixture(scope="module")
def one_process(images, tmp_path_factory) -> tuple[PretrainResult, Path]:
    result = pretrain(images, CONFIG, device="cpu", seed=SEED, source_ids=range(16))
    return result, save_checkpoint(tmp_path_factory.mktemp("one") / "encoder.pt", result)


@pytest.fixture(scope="module")
def two_processes(images, tmp_path_factory) -> tuple[Path, list[dict]]:
    """torchrun with two gloo processes, as an admin would start it; returns the checkpoint and events."""
    folder = tmp_path_factory.mktemp("two")
    np.save(folder / "images.npy", images)
    np.save(folder / "ids.npy", np.arange(16))
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"),
        *(
            "-m",
            "ml.pretrain_ddp",
            "--preset=tiny",
            "--set=max_steps=4",
            "--set=base_lr=0.02",
            f"--seed={SEED}",
            "--device=cpu",
        ),
        f"--images={folder / 'images.npy'}",
        f"--source-ids={folder / 'ids.npy'}",
        f"--out={folder / 'encoder.pt'}",
        f"--events={folder / 'events.jsonl'}",
        "--threads=1",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return folder / "encoder.pt", events


def test_two_processes_give_the_single_process_loss_curve(one_process, two_processes) -> None:
    single, _ = one_process
    distributed = load_checkpoint(two_processes[0])
    assert distributed.curves is not None
    assert_same_curve(distributed.curves.step_loss, single.curves.step_loss)
    assert len(distributed.curves.epoch_loss) == len(single.curves.epoch_loss) == 2
    assert distributed.steps == single.steps == 4


def test_rank_0_reports_every_step_once_and_the_outcome(two_processes) -> None:
    path, events = two_processes
    reports = [TrainingProgress(**{k: v for k, v in e.items() if k != "event"}) for e in events[:-1]]
    assert [e["event"] for e in events] == ["progress"] * 4 + ["done"]  # one process writes, not two
    assert [r.step for r in reports] == [1, 2, 3, 4] and all(r.total_steps == 4 for r in reports)
    curves = load_checkpoint(path).curves
    assert curves is not None and [r.loss for r in reports] == pytest.approx(curves.step_loss, abs=1e-6)
    assert events[-1]["processes"] == 2 and events[-1]["steps"] == 4 and events[-1]["resumed_from"] == 0


def test_the_checkpoint_has_the_single_process_format(images, one_process, two_processes) -> None:
    _, single_path = one_process
    single = torch.load(single_path, weights_only=True)
    distributed = torch.load(two_processes[0], weights_only=True)
    assert distributed.keys() == single.keys()
    assert not any(key.startswith("module.") for key in distributed["state_dict"])
    assert {k: (v.shape, v.dtype) for k, v in distributed["state_dict"].items()} == {
        k: (v.shape, v.dtype) for k, v in single["state_dict"].items()
    }
    for field in ("kind", "format", "encoder_config", "pretrain_config", "data", "seed", "steps", "extra"):
        assert distributed[field] == single[field], field

    loaded = load_checkpoint(two_processes[0], expected=CONFIG.encoder)  # the existing loader
    assert type(loaded.encoder.backbone.bn1) is torch.nn.BatchNorm2d  # no synchronised BatchNorm left in it
    features = embed(loaded.encoder, images, device="cpu", views="centre")
    reference = embed(load_checkpoint(single_path).encoder, images, device="cpu", views="centre")
    cosine = (features * reference).sum(1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.999, cosine
    # Two processes moved the embeddings far less than the four steps of training did.
    initial = embed(build_encoder(CONFIG.encoder, seed=SEED), images, device="cpu", views="centre")
    assert np.abs(features - reference).max() < np.abs(initial - reference).max() / 10


def test_a_batch_that_does_not_split_evenly_is_refused_before_launching(images, tmp_path) -> None:
    with pytest.raises(ValueError, match="batch of 8 images does not split evenly across 3 processes"):
        launch_pretraining(images, CONFIG, processes=3, workdir=tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_vicreg_is_refused_before_launching_and_in_a_replica(images, tmp_path) -> None:
    vicreg = dataclasses.replace(CONFIG, method="vicreg")
    with pytest.raises(ValueError, match="vicreg pretraining runs in one process only"):
        launch_pretraining(images, vicreg, processes=2, workdir=tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="vicreg pretraining runs in one process only"):
        pretrain(images, vicreg, device="cpu", replicas=object())  # type: ignore[arg-type]


def test_a_failing_run_is_an_error_naming_the_cause_and_keeps_its_log(images, tmp_path) -> None:
    broken = get_config("tiny", max_steps=4, tau_schedule="sometimes")  # fails in the first step, in both processes
    with pytest.raises(DistributedRunError, match="ValueError: unknown tau schedule 'sometimes'"):
        launch_pretraining(images, broken, processes=2, workdir=tmp_path / "run", device="cpu", threads=1, poll_s=0.1)
    assert (tmp_path / "run" / "torchrun.log").stat().st_size > 0
    assert not (tmp_path / "run" / "images.npy").exists()  # the pool's copy is gone


def test_a_stopped_run_saves_its_state_and_one_process_continues_it(images, tmp_path) -> None:
    config = get_config("tiny", epochs=20, base_lr=0.02)  # 40 steps: the stop comes long before the end
    state = ResumeSpec(tmp_path / "state.pt", every_s=3600)
    relayed: list[TrainingProgress] = []

    with pytest.raises(TrainingCancelled) as stopped:
        launch_pretraining(
            images,
            config,
            processes=2,
            workdir=tmp_path / "run",
            progress=relayed.append,
            should_stop=lambda: bool(relayed),  # cancel as soon as rank 0's first report arrives
            device="cpu",
            seed=SEED,
            resume=state,
            threads=1,
            poll_s=0.1,
        )
    step = stopped.value.step
    assert relayed[0].step == 1 and relayed[0].total_steps == 40 and 1 <= step < 40
    saved = load_resume_state(state.path)
    assert saved is not None and saved["step"] == step and len(saved["step_loss"]) == step

    # The state rank 0 saved continues in one process, for two more steps...
    with pytest.raises(TrainingCancelled):
        pretrain(images, config, device="cpu", seed=SEED, resume=state, should_stop=stop_after(2))
    continued = load_resume_state(state.path)
    # ... and the curve is the uninterrupted single-process run's.
    reference = ResumeSpec(tmp_path / "reference.pt", every_s=3600)
    with pytest.raises(TrainingCancelled):
        pretrain(images, config, device="cpu", seed=SEED, resume=reference, should_stop=stop_after(step + 2))
    expected = load_resume_state(reference.path)
    assert continued is not None and expected is not None and continued["step"] == expected["step"] == step + 2
    assert_same_curve(continued["step_loss"], expected["step_loss"])


def stop_after(steps: int):
    polls: list[int] = []

    def should_stop() -> bool:  # polled once before every step
        polls.append(1)
        return len(polls) > steps

    return should_stop


def _batchnorm_in_process(rank: int, store: str, folder: str) -> None:
    """One of two processes: GlobalBatchNorm on its half of a float64 batch; writes what it got."""
    import torch.distributed as dist

    from ml.distributed import to_global_batchnorm

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        inputs, weight, bias = _batchnorm_case()
        layer = to_global_batchnorm(_batchnorm_layer(weight, bias))
        half = inputs[rank * 3 : (rank + 1) * 3].clone().requires_grad_(True)
        output = layer(half)
        (output * _upstream()[rank * 3 : (rank + 1) * 3]).sum().backward()
        torch.save(
            {
                "output": output.detach(),
                "input_grad": half.grad,
                "weight_grad": layer.weight.grad,
                "bias_grad": layer.bias.grad,
                "running_mean": layer.running_mean,
                "running_var": layer.running_var,
            },
            Path(folder) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _batchnorm_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(6, 3, 5, 5, generator=generator, dtype=torch.float64) * 2 + 1
    return (
        inputs,
        torch.rand(3, generator=generator, dtype=torch.float64) + 0.5,
        torch.randn(3, generator=generator, dtype=torch.float64),
    )


def _upstream() -> torch.Tensor:
    return torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _batchnorm_layer(weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.BatchNorm2d:
    layer = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def test_global_batchnorm_in_two_processes_is_batchnorm_over_their_whole_batch(tmp_path) -> None:
    torch.multiprocessing.spawn(
        _batchnorm_in_process, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True
    )
    halves = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    inputs, weight, bias = _batchnorm_case()
    layer = _batchnorm_layer(weight, bias)
    whole = inputs.clone().requires_grad_(True)
    output = layer(whole)
    (output * _upstream()).sum().backward()

    torch.testing.assert_close(torch.cat([h["output"] for h in halves]), output.detach())
    torch.testing.assert_close(torch.cat([h["input_grad"] for h in halves]), whole.grad)
    # Each process's parameter gradient is its rows' part; DDP adds them up (averaging the means).
    torch.testing.assert_close((halves[0]["weight_grad"] + halves[1]["weight_grad"]), layer.weight.grad)
    torch.testing.assert_close((halves[0]["bias_grad"] + halves[1]["bias_grad"]), layer.bias.grad)
    for half in halves:
        torch.testing.assert_close(half["running_mean"], layer.running_mean)
        torch.testing.assert_close(half["running_var"], layer.running_var)

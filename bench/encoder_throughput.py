"""Encoder throughput: images per second for a BYOL training step and for embedding.

Runs the real ``ml.train.pretrain`` loop (augmentations, two views, online + target
networks, SGD, EMA update) for a few steps on random uint8 cutouts and times the steps
after a warm-up, then times ``ml.embed.embed`` (test view, eval mode). Content does not
change the cost of a dense CNN, so random images measure the same thing as real ones.

    .venv/bin/python -m bench.encoder_throughput --presets paper,cpu-quick --threads 1,2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="paper,cpu-quick")
    parser.add_argument("--threads", default="2", help="comma-separated torch thread counts to try")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="BYOL batch (capped at the preset's; the paper's 1024 would take ~30 s a step on a CPU)",
    )
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps (allocator, caches)")
    parser.add_argument("--steps", type=int, default=5, help="timed BYOL steps")
    parser.add_argument("--embed-images", type=int, default=2048)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser.parse_args(argv)


def byol_images_per_s(preset: str, batch_size: int, warmup_steps: int, steps: int, device: str | None) -> float:
    """Images per second of BYOL steps (each image counted once, though seen as two views)."""
    from ml.config import get_config
    from ml.train import TrainingProgress, pretrain

    config = get_config(preset, batch_size=batch_size, epochs=1, warmup_epochs=0, run__progress_every=1)
    shape = (batch_size * (warmup_steps + steps), 150, 150)
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    stamps: list[float] = []

    def progress(state: TrainingProgress) -> None:
        stamps.append(time.perf_counter())  # called right after each step's loss is synchronised

    pretrain(images, config, progress=progress, device=device)
    timed = stamps[warmup_steps - 1 :] if warmup_steps else stamps
    return batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def embed_images_per_s(preset: str, n_images: int, device: str | None) -> float:
    """Images per second of ``ml.embed.embed`` with a fresh encoder of the preset."""
    from ml.config import get_config
    from ml.embed import embed
    from ml.encoder import build_encoder

    encoder = build_encoder(get_config(preset).encoder, seed=0)
    images = np.random.default_rng(1).integers(0, 256, size=(n_images, 150, 150), dtype=np.uint8)
    embed(encoder, images[:256], device=device)  # warm-up
    started = time.perf_counter()
    embed(encoder, images, device=device)
    return n_images / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from ml.config import get_config

    device = None if args.device == "auto" else args.device
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    print("| preset | encoder input | threads | BYOL step batch | BYOL step img/s | embedding img/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset in [name.strip() for name in args.presets.split(",")]:
        config = get_config(preset)
        batch_size = min(args.batch_size, config.batch_size)
        view = config.encoder.view
        for threads in [int(count) for count in args.threads.split(",")]:
            torch.set_num_threads(threads)
            step = byol_images_per_s(preset, batch_size, args.warmup_steps, args.steps, device)
            embedding = embed_images_per_s(preset, args.embed_images, device)
            print(
                f"| {preset} | {view.input_size}x{view.input_size} of {view.crop_size}, stem stride "
                f"{config.encoder.stem_stride} | {threads} | {batch_size} | {step:.0f} | {embedding:.0f} |",
                flush=True,
            )
    print(f"torch {torch.__version__}, device {device or 'auto'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

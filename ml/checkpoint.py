"""Encoder checkpoints that say what they are: config, data seen, code version, curves.

A checkpoint is one ``torch.save`` file holding only tensors and plain values, so it loads
with ``torch.load(weights_only=True)`` (no arbitrary code runs on load). Loading rebuilds
the encoder from the stored config and restores its weights exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ml.config import EncoderConfig, PretrainConfig, config_from_dict, config_to_dict
from ml.encoder import RadioEncoder
from ml.errors import CheckpointError
from ml.train import DataFingerprint, PretrainResult, TrainingCurves

CHECKPOINT_KIND = "rgzlabel.ml.encoder"
CHECKPOINT_FORMAT = 1

ExtraValue = str | int | float | bool | None


@dataclass
class EncoderCheckpoint:
    """A loaded checkpoint: the encoder and everything known about how it was made."""

    path: Path
    encoder: RadioEncoder
    pretrain_config: PretrainConfig | None
    data: DataFingerprint | None
    curves: TrainingCurves | None
    seed: int | None
    steps: int | None
    code_version: str | None
    created_at: str
    extra: dict[str, ExtraValue]


def code_version() -> str | None:
    """``ml.__version__`` and/or ``git describe`` of the source tree; None when neither exists."""
    import ml

    parts = [str(v) for v in [getattr(ml, "__version__", None)] if v]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        parts.append(f"git:{described}")
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed package, a container): the version suffices
    return " ".join(parts) or None


def save_checkpoint(
    path: str | Path,
    source: PretrainResult | RadioEncoder,
    *,
    extra: Mapping[str, ExtraValue] | None = None,
) -> Path:
    """Write an encoder checkpoint atomically (a crash never leaves a half-written file).

    Args:
        path: File to write (conventionally ``*.pt``); parent folders are created.
        source: A pretraining result (its encoder, config, data fingerprint and curves are
            stored) or a bare encoder (e.g. a random-init baseline).
        extra: Plain values to keep alongside, e.g. the encoder version's primary key.

    Returns:
        The path written.
    """
    path = Path(path)
    result = source if isinstance(source, PretrainResult) else None
    encoder = source.encoder if isinstance(source, PretrainResult) else source
    payload: dict[str, Any] = {
        "kind": CHECKPOINT_KIND,
        "format": CHECKPOINT_FORMAT,
        "encoder_config": config_to_dict(encoder.config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
        "pretrain_config": config_to_dict(result.config) if result else None,
        "data": dataclasses.asdict(result.data) if result else None,
        "curves": dataclasses.asdict(result.curves) if result else None,
        "seed": result.seed if result else None,
        "steps": result.steps if result else None,
        "code_version": code_version(),
        "torch_version": str(torch.__version__),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(payload, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path, *, expected: EncoderConfig | None = None) -> EncoderCheckpoint:
    """Load a checkpoint written by ``save_checkpoint`` onto the CPU.

    Args:
        path: The checkpoint file.
        expected: When given, the stored encoder must have this architecture and input view.

    Raises:
        CheckpointError: Missing or unreadable file, not an encoder checkpoint, a different
            architecture than ``expected``, or weights that do not fit the stored config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not an rgzlabel encoder checkpoint (no kind {CHECKPOINT_KIND!r})")
    if payload.get("format", 0) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {payload['format']} is newer than this code")
    try:
        config = config_from_dict(EncoderConfig, payload["encoder_config"])
        stored_pretrain = payload["pretrain_config"]
        pretrain_config = config_from_dict(PretrainConfig, stored_pretrain) if stored_pretrain else None
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: config not understood by this code ({exc})") from exc
    if expected is not None and config != expected:
        raise CheckpointError(f"{path}: encoder differs from the expected one: {_differences(config, expected)}")
    try:
        encoder = RadioEncoder(config)
    except ValueError as exc:  # an architecture this code does not know
        raise CheckpointError(f"{path}: {exc}") from exc
    _check_weights(path, encoder, payload["state_dict"])
    encoder.load_state_dict(payload["state_dict"])
    encoder.eval()
    return EncoderCheckpoint(
        path=path,
        encoder=encoder,
        pretrain_config=pretrain_config,
        data=DataFingerprint(**payload["data"]) if payload["data"] else None,
        curves=TrainingCurves(**payload["curves"]) if payload["curves"] else None,
        seed=payload["seed"],
        steps=payload["steps"],
        code_version=payload["code_version"],
        created_at=payload["created_at"],
        extra=payload["extra"],
    )


def load_encoder(path: str | Path, *, expected: EncoderConfig | None = None) -> RadioEncoder:
    """Load only the encoder of a checkpoint (CPU, eval mode); see ``load_checkpoint``."""
    return load_checkpoint(path, expected=expected).encoder


def _differences(stored: EncoderConfig, expected: EncoderConfig) -> str:
    stored_fields, expected_fields = config_to_dict(stored), config_to_dict(expected)
    return ", ".join(
        f"{key}={stored_fields[key]!r} (expected {expected_fields[key]!r})"
        for key in stored_fields
        if stored_fields[key] != expected_fields[key]
    )


def _check_weights(path: Path, encoder: RadioEncoder, state: Mapping[str, torch.Tensor]) -> None:
    """Name mis-shaped, missing and unexpected weights instead of a torch traceback."""
    wanted = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    problems = [
        f"{k} has shape {given[k]}, the encoder needs {wanted[k]}"
        for k in sorted(wanted.keys() & given.keys())
        if wanted[k] != given[k]
    ][:3]
    for label, keys in (("missing", wanted.keys() - given.keys()), ("unexpected", given.keys() - wanted.keys())):
        if keys:
            problems.append(f"{len(keys)} {label} weights (e.g. {', '.join(sorted(keys)[:3])})")
    if problems:
        raise CheckpointError(f"{path}: weights do not fit a {encoder.config.arch} encoder: {'; '.join(problems)}")

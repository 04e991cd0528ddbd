"""Training encoders: self-supervised pretraining (BYOL or VICReg) on the pool and fine-tuning on consensus labels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from rgzlabel.learning.classifiers import classifier_classes, consensus_labels, gold_set, training_labels
from rgzlabel.learning.embedding import load_pool, pool_ids, torch_device
from rgzlabel.learning.jobs import JobContext
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job


def training_reporter(context: JobContext) -> Callable[[Any], None]:
    """A training loop's progress callback that writes the job's progress line and figures."""

    def report(p: Any) -> None:  # ml.train.TrainingProgress
        # The percentage is the training's own (step / total), so "25 %" and "step 100/400"
        # agree; the ETA is the measured step rate of this run times the steps left.
        resumed = f" (resumed from step {p.resumed_from})" if p.resumed_from else ""
        context.progress(
            p.fraction,
            f"epoch {p.epoch + 1}, step {p.step}/{p.total_steps}, loss {p.loss:.4f}, "
            f"{p.images_per_s:.1f} img/s, {p.eta_s / 60:.1f} min left{resumed}",
            force=p.step == p.total_steps,  # the last step is always recorded, however soon it comes
            epoch=p.epoch + 1,
            step=p.step,
            total_steps=p.total_steps,
            loss=p.loss,
            images_per_s=p.images_per_s,
            eta_s=p.eta_s,
            resumed_from=p.resumed_from,
        )

    return report


def pretrain_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Pretrain an encoder (BYOL or VICReg, as its preset says) on the whole pool, record it, then
    queue its embedding.

    ``params``: ``preset`` (``ml.config.PRETRAIN_PRESETS``, default ``RGZ_PRETRAIN_PRESET``), optional ``overrides``
    (config fields, e.g. ``{"epochs": 2}``) and ``seed``. With ``RGZ_PRETRAIN_PROCESSES`` > 1
    the training runs in that many torchrun processes (one per GPU), watched from here.
    """
    from ml.checkpoint import save_checkpoint
    from ml.config import config_to_dict, get_config
    from ml.train import PretrainResult, ResumeSpec, pretrain

    config = get_config(job.params.get("preset", settings.RGZ_PRETRAIN_PRESET), **job.params.get("overrides", {}))
    ids, images = load_pool(context=context, progress_share=None)
    # Stopped by a worker shutdown, the job is queued again and continues from this state.
    resume = ResumeSpec(resume_path(job), every_s=settings.RGZ_RESUME_EVERY_S)
    train: Callable[..., PretrainResult] = pretrain
    processes = settings.RGZ_PRETRAIN_PROCESSES
    if processes > 1 and not config.data_parallel:  # VICReg: its loss needs the whole batch
        context.warn(f"{config.method} trains in one process: RGZ_PRETRAIN_PROCESSES={processes} applies to BYOL only")
        processes = 1
    if processes > 1:
        from ml.pretrain_ddp import launch_pretraining

        threads = settings.RGZ_TORCH_THREADS // processes or None
        folder = settings.DATA_DIR / "ddp" / f"pretrain-job{job.pk}"
        train = partial(launch_pretraining, processes=processes, workdir=folder, threads=threads)

    result = train(
        images,
        config,
        source_ids=ids,
        progress=training_reporter(context),
        should_stop=context.should_stop,
        device=torch_device(context),
        seed=int(job.params.get("seed", 0)),
        resume=resume,
    )
    name = f"{config.method}-{config.name}-job{job.pk}"  # e.g. byol-cpu-quick-job3, vicreg-cpu-vicreg-job7
    path = save_checkpoint(settings.DATA_DIR / "encoders" / f"{name}.pt", result, extra={"job": job.pk})
    encoder_version, embed = record_encoder(
        job, name, path, architecture=config.encoder.arch, config=config_to_dict(config), result=result
    )
    resume.path.unlink(missing_ok=True)
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    return {
        "summary": f"pretrained {name}: {result.steps} steps in {result.seconds:.0f} s on {result.device}{resumed}",
        "encoder": encoder_version.pk,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "final_loss": result.curves.step_loss[-1] if result.curves.step_loss else None,
        "embed_job": embed.pk,
    }


def resume_path(job: Job) -> Path:
    """Where a pretraining job keeps its resumable state (removed once the encoder is recorded)."""
    return settings.DATA_DIR / "resume" / f"pretrain-job{job.pk}.pt"


def finetune_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Fine-tune an encoder on the consensus labels (the paper's recipe), record it, queue its embedding.

    ``params``: ``encoder`` (an EncoderVersion id; default the active embedding's encoder),
    ``preset`` (``paper``, ``cpu-quick``, ``cpu-semisup``, ``tiny``; default ``RGZ_FINETUNE_PRESET``),
    optional ``overrides`` and ``seed``. A preset with ``unlabelled_weight > 0`` (``cpu-semisup``) also
    trains on up to ``RGZ_SEMISUP_POOL`` unlabelled sources of the pool (FixMatch). Gold-standard
    sources are never trained on, so the classifier retrained on the new embedding is still scored
    on labels its features have not seen.
    """
    import torch

    from ml.checkpoint import load_encoder, save_checkpoint
    from ml.config import config_to_dict, get_finetune_config
    from ml.finetune import finetune
    from rgzlabel.labelling.services import default_workflow

    base = finetune_base(job.params.get("encoder"))
    preset = job.params.get("preset", settings.RGZ_FINETUNE_PRESET)
    config = get_finetune_config(preset, **job.params.get("overrides", {}))
    workflow = default_workflow()
    classes = classifier_classes(workflow)
    ids, labels, _ = consensus_labels(workflow)
    gold_ids, _ = gold_set(workflow)
    ids, labels = training_labels(ids, labels, classes, available=ids[~np.isin(ids, gold_ids)])
    pool_ids, images = load_pool(context=context, source_ids=ids, progress_share=None)
    label_of = dict(zip(ids.tolist(), labels, strict=True))
    targets = np.array([classes.index(label_of[int(i)]) for i in pool_ids])
    unlabelled = None
    if config.unlabelled_weight > 0:  # semi-supervised: the rest of the pool, unlabelled (never gold)
        rest = unlabelled_sample(np.concatenate([pool_ids, gold_ids]), int(job.params.get("seed", 0)))
        _, unlabelled = load_pool(context=context, source_ids=rest, progress_share=None)
    with_pool = "" if unlabelled is None else f" and {len(unlabelled)} unlabelled sources"
    context.progress(0.2, f"fine-tuning {base.name} on {len(pool_ids)} consensus labels{with_pool}", force=True)

    result = finetune(
        load_encoder(base.checkpoint_path),
        images,
        targets,
        config,
        n_classes=len(classes),
        progress=training_reporter(context),
        should_stop=context.should_stop,
        device=torch_device(context),
        seed=int(job.params.get("seed", 0)),
        unlabelled=unlabelled,
    )
    encoder = result.model.encoder.to("cpu").to(memory_format=torch.contiguous_format).eval()
    name = f"{base.name}-finetuned-job{job.pk}"
    path = save_checkpoint(settings.DATA_DIR / "encoders" / f"{name}.pt", encoder, extra={"job": job.pk})
    settings_used = {**base.config, "finetune": config_to_dict(config), "finetuned_from": base.name, "classes": classes}
    encoder_version, embed = record_encoder(
        job, name, path, architecture=base.architecture, config=settings_used, result=result, source_ids=pool_ids
    )
    return {
        "summary": f"fine-tuned {base.name} on {len(pool_ids)} labels{with_pool} in {result.seconds:.0f} s ({preset})",
        "encoder": encoder_version.pk,
        "n_labels": len(pool_ids),
        "n_unlabelled": 0 if unlabelled is None else len(unlabelled),
        "seconds": round(result.seconds, 1),
        "final_loss": result.curves.step_loss[-1] if result.curves.step_loss else None,
        "embed_job": embed.pk,
    }


def unlabelled_sample(exclude: np.ndarray, seed: int) -> np.ndarray:
    """Up to ``RGZ_SEMISUP_POOL`` source ids with a cutout, not in ``exclude``, drawn at random by ``seed``.

    Raises:
        ValueError: No such source (every cutout is labelled or gold).
    """
    ids = np.setdiff1d(pool_ids(), exclude)
    if len(ids) == 0:
        raise ValueError("semi-supervised fine-tuning needs unlabelled sources; every source is labelled")
    if len(ids) > settings.RGZ_SEMISUP_POOL:
        ids = np.sort(np.random.default_rng(seed).choice(ids, settings.RGZ_SEMISUP_POOL, replace=False))
    return ids


def record_encoder(
    job: Job,
    name: str,
    path: Path,
    *,
    architecture: str,
    config: dict[str, Any],
    result: Any,
    source_ids: np.ndarray | None = None,
) -> tuple[EncoderVersion, Job]:
    """Record a trained encoder (pretrained or fine-tuned) and queue its embedding of the pool.

    ``result`` is an ``ml`` training result: its curves are kept, and its data fingerprint
    when it has one (pretraining), else the hash of ``source_ids`` (the labels it was tuned on).
    """
    from ml.train import fingerprint_ids
    from rgzlabel.learning.jobs import create_job

    data = getattr(result, "data", None)
    if data is not None:
        data_hash, n_images = data.source_ids_sha256 or data.images_sha256, data.n_images
    elif source_ids is not None:
        data_hash, n_images = fingerprint_ids(source_ids), len(source_ids)
    else:
        raise ValueError("an encoder is recorded with its data fingerprint or the source ids it was tuned on")
    encoder_version = EncoderVersion.objects.create(
        name=name,
        architecture=architecture,
        config=config,
        checkpoint_path=str(path),
        data_hash=data_hash,
        n_images=n_images,
        code_version=_code_version(),
        curves={"step_loss": result.curves.step_loss, "epoch_loss": result.curves.epoch_loss},
        job=job,
    )
    # The chain: a new encoder is embedded next (and, later, retrained on and queued from).
    return encoder_version, create_job(Job.Kind.EMBED, {"method": "encoder", "encoder": encoder_version.pk})


def finetune_base(encoder_id: int | None) -> EncoderVersion:
    """The encoder a fine-tuning starts from: the one asked for, else the active embedding's."""
    if encoder_id is not None:
        return EncoderVersion.objects.get(pk=encoder_id)
    active = EmbeddingSet.objects.filter(is_active=True).select_related("encoder").first()
    if active is None or active.encoder is None:
        raise ValueError("no pretrained encoder to fine-tune: the active embedding is pixel PCA; pretrain first")
    return active.encoder


def _code_version() -> str:
    from ml.checkpoint import code_version

    return (code_version() or "")[:64]

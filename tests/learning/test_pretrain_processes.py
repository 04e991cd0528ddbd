"""A pretraining job with RGZ_PRETRAIN_PROCESSES > 1 trains in torchrun processes and is recorded as one."""

from __future__ import annotations

import pytest

from rgzlabel.learning.jobs import run_job
from rgzlabel.learning.models import EncoderVersion, Job

pytestmark = pytest.mark.django_db


def test_a_pretraining_in_two_processes_is_recorded_like_one_in_the_worker(settings, make_source) -> None:
    from ml.checkpoint import load_checkpoint
    from rgzlabel.learning.training import resume_path

    settings.RGZ_PRETRAIN_PROCESSES = 2
    settings.RGZ_TORCH_DEVICE = "cpu"  # gloo, as on a machine without GPUs
    sources = [make_source() for _ in range(16)]
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, params={"preset": "tiny", "overrides": {"max_steps": 3}})

    run_job(job.pk)

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.result["device"] == "2 x cpu" and job.result["steps"] == 3
    # Rank 0's progress reached the Job row through the launcher.
    assert job.metrics["total_steps"] == 3 and job.metrics["step"] == 3
    assert "step 3/3" in job.log
    encoder = EncoderVersion.objects.get(job=job)
    assert encoder.n_images == len(sources) and len(encoder.curves["step_loss"]) == 3
    checkpoint = load_checkpoint(encoder.checkpoint_path)
    assert checkpoint.extra == {"job": job.pk} and checkpoint.curves.step_loss == encoder.curves["step_loss"]
    assert Job.objects.get(pk=job.result["embed_job"]).params == {"method": "encoder", "encoder": encoder.pk}
    # Nothing left behind: the resumable state and the processes' folder (pool copy, events, log).
    assert not resume_path(job).exists()
    assert not (settings.DATA_DIR / "ddp" / f"pretrain-job{job.pk}").exists()


def test_a_vicreg_pretraining_trains_in_the_worker_and_says_why(settings, make_source) -> None:
    settings.RGZ_PRETRAIN_PROCESSES = 2
    settings.RGZ_TORCH_DEVICE = "cpu"
    for _ in range(16):
        make_source()
    overrides = {"max_steps": 2, "method": "vicreg", "projection_hidden_dim": 32, "projection_dim": 32}
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, params={"preset": "tiny", "overrides": overrides})

    run_job(job.pk)

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.result["device"] == "cpu" and job.result["steps"] == 2  # one process, not "2 x cpu"
    assert any("vicreg trains in one process" in warning for warning in job.warnings)
    assert EncoderVersion.objects.get(job=job).name == f"vicreg-tiny-job{job.pk}"

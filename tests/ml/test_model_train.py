import numpy as np
import pytest
import torch

from ml.config import get_config
from ml.errors import DataError, EmptyDataError, TrainingCancelled
from ml.train import TrainingProgress, plan_loop, pretrain, warmup_cosine

TINY = get_config("tiny")  # batch 8, 2 epochs, 32-pixel views, progress every step


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 150, 150), dtype=np.uint8)


def test_pretraining_reports_progress_with_increasing_steps_and_records_curves(images):
    reports: list[TrainingProgress] = []
    result = pretrain(images, TINY, progress=reports.append, device="cpu", source_ids=range(16))
    assert [r.step for r in reports] == [1, 2, 3, 4]
    assert reports[-1].fraction == 1.0 and reports[-1].eta_s == 0.0
    assert [r.epoch for r in reports] == [0, 0, 1, 1]
    assert all(r.total_steps == 4 and r.images_per_s > 0 and 0 <= r.loss <= 8 for r in reports)
    assert len(result.curves.step_loss) == 4 and len(result.curves.epoch_loss) == 2
    assert result.curves.epoch_loss[0] == pytest.approx(np.mean(result.curves.step_loss[:2]))
    assert result.steps == 4 and result.data.n_images == 16 and result.data.source_ids_sha256
    assert not result.encoder.training


def test_epoch_curves_do_not_depend_on_how_often_progress_is_reported(images):
    reports: list[TrainingProgress] = []
    result = pretrain(images, get_config("tiny", run__progress_every=3), progress=reports.append, device="cpu")
    assert [r.step for r in reports] == [3, 4]
    assert reports[0].loss == pytest.approx(np.mean(result.curves.step_loss[:3]))
    assert len(result.curves.step_loss) == 4 and len(result.curves.epoch_loss) == 2


def test_should_stop_cancels_between_steps(images):
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingCancelled) as cancelled:
        pretrain(images, TINY, should_stop=stop_after_two, device="cpu")
    assert cancelled.value.step == 2


def test_the_same_seed_gives_the_same_run(images):
    config = get_config("tiny", max_steps=2)
    first = pretrain(images, config, device="cpu", seed=5)
    second = pretrain(images, config, device="cpu", seed=5)
    assert first.curves.step_loss == second.curves.step_loss
    assert first.data == second.data


def test_an_empty_or_single_image_pool_is_a_clear_error():
    with pytest.raises(EmptyDataError):
        pretrain(np.zeros((0, 150, 150), dtype=np.uint8), TINY, device="cpu")
    with pytest.raises(EmptyDataError, match="at least 2"):
        pretrain(np.zeros((1, 150, 150), dtype=np.uint8), TINY, device="cpu")
    with pytest.raises(DataError, match="uint8"):
        pretrain(np.zeros((4, 150, 150), dtype=np.float64), TINY, device="cpu")


def test_the_loop_plan_drops_the_last_partial_batch_and_caps_steps():
    plan = plan_loop(n_items=20, batch_size=8, epochs=3, max_steps=None, warmup_epochs=1)
    assert (plan.batch_size, plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (8, 2, 6, 2)
    assert plan_loop(5, 8, 3, None, 1).batch_size == 5
    assert plan_loop(20, 8, 3, 4, 1).total_steps == 4


def test_the_learning_rate_warms_up_linearly_then_decays_on_a_cosine():
    factors = [warmup_cosine(step, total_steps=10, warmup_steps=2) for step in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert factors[-1] < 0.05


def test_a_stopped_run_resumes_from_its_saved_state_to_the_same_weights(images, tmp_path):
    """Stop at step 3 of 6 (state saved on stop), start again: same weights, curves and format as one run."""
    from ml.checkpoint import load_checkpoint, save_checkpoint
    from ml.train import ResumeSpec, load_resume_state

    config = get_config("tiny", epochs=3)  # 2 steps per epoch, 6 steps
    whole = pretrain(images, config, device="cpu", seed=3)

    resume = ResumeSpec(tmp_path / "resume" / "run.pt", every_s=3600)
    calls = []

    def stop_after_three() -> bool:  # polled before each step: the fourth poll stops it
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingCancelled) as cancelled:
        pretrain(images, config, device="cpu", seed=3, resume=resume, should_stop=stop_after_three)
    assert cancelled.value.step == 3
    saved = load_resume_state(resume.path)
    assert saved is not None and saved["step"] == 3 and len(saved["step_loss"]) == 3
    assert any(key.startswith("target_encoder.") for key in saved["model"])

    reports: list[TrainingProgress] = []
    resumed = pretrain(images, config, device="cpu", seed=3, resume=resume, progress=reports.append)

    assert resumed.resumed_from == 3 and resumed.steps == whole.steps == 6
    assert [r.step for r in reports] == [4, 5, 6]  # the progress goes on, not back to step 1
    assert all(r.resumed_from == 3 and r.fraction == r.step / 6 for r in reports)
    assert resumed.curves.step_loss == pytest.approx(whole.curves.step_loss, rel=1e-5)
    assert resumed.curves.epoch_loss == pytest.approx(whole.curves.epoch_loss, rel=1e-5)
    for (name, ours), theirs in zip(
        resumed.encoder.state_dict().items(), whole.encoder.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
    # The final checkpoint is the usual encoder checkpoint, whichever way the run got there.
    a = load_checkpoint(save_checkpoint(tmp_path / "whole.pt", whole))
    b = load_checkpoint(save_checkpoint(tmp_path / "resumed.pt", resumed))
    assert a.pretrain_config == b.pretrain_config and a.data == b.data
    assert (
        torch.load(tmp_path / "whole.pt", weights_only=True).keys()
        == torch.load(tmp_path / "resumed.pt", weights_only=True).keys()
    )


def test_a_saved_state_of_another_run_is_not_resumed(images, tmp_path):
    from ml.train import ResumeSpec

    resume = ResumeSpec(tmp_path / "run.pt", every_s=0)  # saved after every step
    pretrain(images, get_config("tiny", max_steps=3), device="cpu", seed=1, resume=resume)
    other = pretrain(images, get_config("tiny", max_steps=3), device="cpu", seed=2, resume=resume)
    assert other.resumed_from == 0 and len(other.curves.step_loss) == 3

import numpy as np
import pytest
import torch
import torchvision

from ml.checkpoint import load_checkpoint, load_encoder, save_checkpoint
from ml.config import EncoderConfig, ViewConfig, get_config
from ml.encoder import build_encoder
from ml.errors import CheckpointError
from ml.train import PretrainResult, TrainingCurves, fingerprint_data

TINY = get_config("tiny")


@pytest.fixture
def result() -> PretrainResult:
    images = np.random.default_rng(0).integers(0, 256, (4, 150, 150), dtype=np.uint8)
    encoder = build_encoder(TINY.encoder, seed=1)
    # Non-trivial BatchNorm statistics, so the round trip must carry buffers too.
    encoder.train()(torch.randn(8, 1, 32, 32) * 3 + 1)
    return PretrainResult(
        encoder=encoder.eval(),
        config=TINY,
        curves=TrainingCurves(step_loss=[3.9, 3.5], epoch_loss=[3.7]),
        data=fingerprint_data(images, source_ids=[10, 11, 12, 13]),
        seed=1,
        steps=2,
        seconds=0.1,
        device="cpu",
    )


def test_a_loaded_encoder_gives_bit_identical_outputs(tmp_path, result):
    path = save_checkpoint(tmp_path / "encoder.pt", result)
    loaded = load_encoder(path)
    views = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(views), result.encoder(views))
    assert not loaded.training


def test_it_keeps_config_data_curves_and_extra_metadata(tmp_path, result):
    path = save_checkpoint(tmp_path / "encoder.pt", result, extra={"encoder_version": 7})
    checkpoint = load_checkpoint(path)
    assert checkpoint.pretrain_config == TINY
    assert checkpoint.encoder.config == TINY.encoder
    assert checkpoint.data == result.data and checkpoint.data.n_images == 4
    assert checkpoint.curves == result.curves
    assert (checkpoint.seed, checkpoint.steps) == (1, 2)
    assert checkpoint.extra == {"encoder_version": 7}
    assert checkpoint.created_at


def test_a_bare_encoder_can_be_saved_without_training_metadata(tmp_path):
    path = save_checkpoint(tmp_path / "random.pt", build_encoder(EncoderConfig(), seed=0))
    checkpoint = load_checkpoint(path)
    assert checkpoint.pretrain_config is None and checkpoint.data is None and checkpoint.curves is None


def test_the_write_leaves_no_partial_files(tmp_path, result):
    save_checkpoint(tmp_path / "encoder.pt", result)
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.pt"]


def test_a_different_architecture_is_a_clear_error_naming_file_and_field(tmp_path, result):
    path = save_checkpoint(tmp_path / "encoder.pt", result)
    with pytest.raises(CheckpointError, match=r"encoder\.pt.*stem_stride=2 \(expected 1\)"):
        load_encoder(path, expected=EncoderConfig(stem_stride=1, view=ViewConfig(input_size=32)))


def test_weights_of_another_network_are_a_clear_error(tmp_path, result):
    path = save_checkpoint(tmp_path / "encoder.pt", result)
    payload = torch.load(path, weights_only=True)
    foreign = torchvision.models.resnet18(weights=None)  # 3-channel 7x7 stem, with fc
    payload["state_dict"] = {f"backbone.{k}": v for k, v in foreign.state_dict().items()}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"encoder\.pt: weights do not fit") as error:
        load_encoder(path)
    message = str(error.value)
    assert "backbone.conv1.weight has shape (64, 3, 7, 7), the encoder needs (64, 1, 3, 3)" in message
    assert "2 unexpected weights (e.g. backbone.fc.bias, backbone.fc.weight)" in message
    payload["state_dict"] = foreign.state_dict()  # no "backbone." prefix: nothing matches
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"\d+ missing weights .*\d+ unexpected weights"):
        load_encoder(path)


def test_files_that_are_not_encoder_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_encoder(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable checkpoint"):
        load_encoder(garbage)
    plain = tmp_path / "plain.pt"
    torch.save(build_encoder(EncoderConfig()).state_dict(), plain)
    with pytest.raises(CheckpointError, match="plain.pt: not an rgzlabel encoder checkpoint"):
        load_encoder(plain)

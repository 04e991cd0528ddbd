import numpy as np
import pytest
import torch

from ml.config import get_config
from ml.embed import embed, embed_to_folder, read_embeddings, write_embeddings
from ml.encoder import RadioEncoder, build_encoder
from ml.errors import DataError, EmptyDataError, ShapeMismatchError


@pytest.fixture(scope="module")
def encoder() -> RadioEncoder:
    return build_encoder(get_config("tiny").encoder, seed=0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 150, 150), dtype=np.uint8)


def test_embeddings_are_float32_rows_of_feature_width(encoder, images):
    matrix = embed(encoder, images, batch_size=4, device="cpu")
    assert matrix.shape == (6, 512) and matrix.dtype == np.float32


def test_embedding_is_deterministic_and_uses_eval_mode(encoder, images):
    encoder.train()
    running_mean = encoder.backbone.bn1.running_mean.clone()
    first = embed(encoder, images, device="cpu")
    second = embed(encoder, images, device="cpu")
    assert np.array_equal(first, second)
    assert torch.equal(encoder.backbone.bn1.running_mean, running_mean)
    # In train mode BatchNorm would use batch statistics, making a row depend on its batch.
    alone = embed(encoder, images[:1], device="cpu")
    np.testing.assert_allclose(alone[0], first[0], atol=1e-4)


@pytest.mark.parametrize(
    "turn", [lambda x: np.rot90(x, 1, axes=(1, 2)), lambda x: x[:, :, ::-1]], ids=["rot90", "flip"]
)
def test_dihedral_views_make_rows_independent_of_orientation(encoder, images, turn):
    turned = np.ascontiguousarray(turn(images))

    centre, centre_turned = embed(encoder, images, device="cpu"), embed(encoder, turned, device="cpu")
    dihedral = embed(encoder, images, device="cpu", views="dihedral")
    dihedral_turned = embed(encoder, turned, device="cpu", views="dihedral")

    assert np.abs(centre - centre_turned).max() > 1e-3  # one view does see the orientation
    np.testing.assert_allclose(dihedral_turned, dihedral, rtol=1e-4, atol=1e-5)
    assert np.abs(dihedral - centre).max() > 1e-3  # and the eight views are not that one view


def test_unknown_views_are_refused_before_any_work(encoder):
    with pytest.raises(ValueError, match="unknown test views 'octagonal'; choose from centre, dihedral"):
        embed(encoder, np.zeros((0, 150, 150), dtype=np.uint8), device="cpu", views="octagonal")


def test_it_can_write_into_a_given_array(encoder, images):
    out = np.zeros((6, 512), dtype=np.float32)
    assert embed(encoder, images, out=out, device="cpu") is out
    assert np.abs(out).sum() > 0
    with pytest.raises(ShapeMismatchError):
        embed(encoder, images, out=np.zeros((5, 512), dtype=np.float32), device="cpu")


def test_no_images_is_a_clear_error(encoder):
    with pytest.raises(EmptyDataError):
        embed(encoder, np.zeros((0, 150, 150), dtype=np.uint8), device="cpu")


def test_a_written_set_reads_back_memory_mapped_and_keyed_by_source_id(tmp_path):
    matrix = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    ids = np.array([50, 10, 40, 20, 30])
    write_embeddings(tmp_path / "set", ids, matrix, rows_per_write=2)
    stored = read_embeddings(tmp_path / "set")
    assert isinstance(stored.matrix, np.memmap)
    assert np.array_equal(stored.matrix, matrix) and stored.source_ids.dtype == np.int64
    assert np.array_equal(stored.vectors([20, 50]), matrix[[3, 0]])
    with pytest.raises(KeyError, match="99"):
        stored.rows([10, 99])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_embedding_straight_to_a_folder_matches_embed(tmp_path, encoder, images):
    path = embed_to_folder(encoder, images, np.arange(6) + 100, tmp_path / "set", batch_size=4, device="cpu")
    stored = read_embeddings(path, mmap=False)
    assert np.array_equal(stored.matrix, embed(encoder, images, device="cpu"))


def test_an_existing_set_is_replaced_only_when_asked(tmp_path):
    write_embeddings(tmp_path / "set", [1, 2], np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(FileExistsError):
        write_embeddings(tmp_path / "set", [1, 2], np.ones((2, 3), dtype=np.float32))
    write_embeddings(tmp_path / "set", [1, 2], np.ones((2, 3), dtype=np.float32), overwrite=True)
    assert read_embeddings(tmp_path / "set").matrix.sum() == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_bad_sets_are_clear_errors(tmp_path):
    with pytest.raises(ShapeMismatchError):
        write_embeddings(tmp_path / "a", [1, 2, 3], np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(DataError, match="unique"):
        write_embeddings(tmp_path / "b", [1, 1], np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(EmptyDataError):
        write_embeddings(tmp_path / "c", [], np.zeros((0, 4), dtype=np.float32))
    assert not any(tmp_path.iterdir())


def test_poses_are_the_eight_views_whose_mean_is_the_dihedral_row(encoder, images):
    from ml.embed import embed_poses

    poses = embed_poses(encoder, images, batch_size=4, device="cpu")
    assert poses.shape == (8, 6, 512) and poses.dtype == np.float32
    np.testing.assert_allclose(poses.mean(axis=0), embed(encoder, images, device="cpu", views="dihedral"), atol=1e-5)
    np.testing.assert_allclose(poses[0], embed(encoder, images, device="cpu"), atol=1e-5)
    # Pose 1 is a quarter turn: the first pose of the turned images (rotation sign aside, some pose matches).
    turned = embed(encoder, np.ascontiguousarray(np.rot90(images, 1, axes=(1, 2))), device="cpu")
    assert min(np.abs(turned - pose).max() for pose in poses[1:4]) < 1e-4
    assert np.abs(poses[1] - poses[0]).max() > 1e-3


def test_poses_of_no_images_are_refused(encoder):
    from ml.embed import embed_poses

    with pytest.raises(EmptyDataError, match="no images"):
        embed_poses(encoder, np.zeros((0, 150, 150), dtype=np.uint8), device="cpu")

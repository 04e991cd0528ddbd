"""The paper benchmark command: resumable runs, stopping on time, sizing pretraining to a budget,
validation folds inside the training set."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench import paper_benchmark


def test_fits_run_seed_by_seed_so_a_stopped_run_keeps_methods_comparable():
    done = {("pca", 36, 0), ("linear", 36, 0)}

    todo = paper_benchmark.plan_fits(["linear", "pca"], [36, 145], [0, 1], done)

    assert todo == [
        (0, 145, "linear"),
        (0, 145, "pca"),
        (1, 36, "linear"),
        (1, 36, "pca"),
        (1, 145, "linear"),
        (1, 145, "pca"),
    ]


def test_stop_after_runs_no_new_fit_and_a_rerun_goes_on(shared_data, tmp_path, capsys):
    mirabest = shared_data / "mirabest" / "MiraBest_F_batches.tar.gz"
    common = ["--methods", "pca", "--budgets", "36,73", "--seeds", "0-1", "--mirabest", str(mirabest)]
    common += ["--out", str(tmp_path), "--docs-plot", ""]

    # Loading the split alone takes longer than a microsecond: nothing may start.
    assert paper_benchmark.main([*common, "--stop-after", "1e-8"]) == 0
    record = json.loads((tmp_path / "paper_benchmark.json").read_text())
    assert record["results"] == []
    assert record["runs"][-1]["fits_left"] == 4
    streams = capsys.readouterr()
    assert "4 fits left" in streams.err
    assert "no results yet" in streams.err and "|" not in streams.out

    assert paper_benchmark.main(common) == 0
    record = json.loads((tmp_path / "paper_benchmark.json").read_text())
    assert sorted((r["budget"], r["seed"]) for r in record["results"]) == [(36, 0), (36, 1), (73, 0), (73, 1)]
    assert record["runs"][-1]["fits_left"] == 0
    assert all(0 <= r["error"] <= 1 for r in record["results"])
    assert (tmp_path / "paper_benchmark.png").stat().st_size > 0
    assert "| raw-pixel PCA + logistic regression |" in capsys.readouterr().out


def test_pretraining_is_sized_from_the_measured_rate_and_capped_at_the_preset():
    from ml.config import get_config

    config = get_config("tiny")  # 2 epochs

    few, rate = paper_benchmark.sized_epochs(config, n_images=100_000, minutes=1e-6, device="cpu")
    many, _ = paper_benchmark.sized_epochs(config, n_images=16, minutes=60, device="cpu")

    assert rate > 0
    assert few == 1  # never zero epochs, however short the budget
    assert many == config.epochs  # never more than the preset asks for


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pretrain-minutes", "5", "--methods", "pca"], "needs --pretrain-preset"),
        (["--pretrain-preset", "tiny", "--pretrain-minutes", "5", "--epochs", "3"], "no --epochs"),
        (["--methods", "pca", "--stop-after", "0"], "--stop-after must be positive"),
        (["--methods", "pca", "--split", "validation", "--folds", "1"], "--folds must be at least 2"),
        (["--methods", "pca", "--probe-c", "0"], "--probe-c must be positive"),
        (["--methods", "pca", "--selftrain-share", "1.5"], "--selftrain-share must lie in (0, 1]"),
        (["--methods", "pca", "--selftrain-rounds", "-1"], "--selftrain-rounds must be 0 or more"),
    ],
)
def test_contradictory_time_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        paper_benchmark.parse_args(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_validation_scores_each_seed_on_its_fold_of_the_training_set(tmp_path, monkeypatch, capsys):
    import ml.evaluation
    from ml.baseline import pixel_pca_embeddings
    from ml.evaluation import error_rate, linear_probe, load_mirabest_confident_split, stratified_subset
    from tests.synthetic import mirabest_entries, write_mirabest_archive

    # 15 sources per code: MiraBest Confident's 5 codes give 50 training sources (30 FRI,
    # 20 FRII) and 25 test sources.
    archive = write_mirabest_archive(tmp_path / "MiraBest_F_batches.tar.gz", mirabest_entries(per_code=15))
    split = load_mirabest_confident_split(archive)
    assert (len(split.train_labels), len(split.test_labels)) == (50, 25)
    # The command gets the split without its test sources: scoring or fitting on them would fail.
    no_test = dataclasses.replace(split, test_images=split.test_images[:0], test_labels=split.test_labels[:0])
    monkeypatch.setattr(ml.evaluation, "load_mirabest_confident_split", lambda path: no_test)
    out = tmp_path / "out"
    argv = ["--split", "validation", "--folds", "3", "--methods", "pca", "--pca-dim", "8", "--budgets", "10,50"]
    argv += ["--seeds", "0-3", "--mirabest", str(archive), "--out", str(out)]

    assert paper_benchmark.main(argv) == 0

    record = json.loads((out / "paper_benchmark_validation.json").read_text())
    assert not (out / "paper_benchmark.json").exists()
    assert (out / "paper_benchmark_validation.png").stat().st_size > 0
    assert record["identity"]["split"] == "validation" and record["identity"]["folds"] == 3
    # Budget 50 is more than any fold's training part (50 sources less one fold): skipped, once.
    assert sorted((r["budget"], r["seed"]) for r in record["results"]) == [(10, 0), (10, 1), (10, 2), (10, 3)]
    streams = capsys.readouterr()
    assert streams.err.count("skipping budget 50") == 1
    assert streams.out.startswith("validation: 3-fold inside the 50 training sources")
    # Seed s is scored on fold s % 3 (17, 17 and 16 sources: the three folds cover the 50),
    # trained on a subset of the other folds; recomputed here from the folds and the PCA probe.
    scored = {r["seed"]: r["scored"] for r in record["results"]}
    assert scored[0] == scored[3] and sorted(scored[seed] for seed in range(3)) == [16, 17, 17]
    for result in record["results"]:
        part = ml.evaluation.validation_split(split, result["seed"] % 3, 3)
        n_train = len(part.train_labels)
        features = pixel_pca_embeddings(
            np.concatenate([part.train_images, part.test_images]), dim=8, fit_rows=np.arange(n_train)
        )
        probe = linear_probe(features[:n_train], part.train_labels, features[n_train:])
        predictions = probe(stratified_subset(part.train_labels, 10, result["seed"]), result["seed"])
        assert result["scored"] == len(part.test_labels)
        assert result["error"] == pytest.approx(error_rate(predictions, part.test_labels))


def test_validation_has_no_docs_plot_unless_asked_and_test_keeps_its_own(tmp_path):
    validation = paper_benchmark.parse_args(["--methods", "pca", "--split", "validation"])
    test = paper_benchmark.parse_args(["--methods", "pca"])
    chosen = paper_benchmark.parse_args(["--methods", "pca", "--split", "validation", "--docs-plot", "v.png"])

    assert validation.docs_plot == "" and validation.folds == 5
    assert test.split == "test" and test.docs_plot.endswith("docs/paper_benchmark.png")
    assert chosen.docs_plot == "v.png"


def test_semisup_fine_tunes_with_the_unlabelled_rest_of_the_training_part_only(tmp_path, monkeypatch, capsys):
    import ml.evaluation
    import ml.finetune
    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.encoder import build_encoder
    from ml.evaluation import load_mirabest_confident_split
    from tests.synthetic import mirabest_entries, write_mirabest_archive

    archive = write_mirabest_archive(tmp_path / "MiraBest_F_batches.tar.gz", mirabest_entries(per_code=6))
    split = load_mirabest_confident_split(archive)
    no_test = dataclasses.replace(split, test_images=split.test_images[:0], test_labels=split.test_labels[:0])
    monkeypatch.setattr(ml.evaluation, "load_mirabest_confident_split", lambda path: no_test)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", build_encoder(get_config("tiny").encoder, seed=0))
    pools: list[tuple[str, int | None, float]] = []
    real_finetune = ml.finetune.finetune

    def recording_finetune(encoder, images, labels, config, **kwargs):  # the real fit, with its pool noted
        pool = kwargs.get("unlabelled")
        pools.append((config.name, None if pool is None else len(pool), config.unlabelled_weight))
        if pool is not None:  # the pool is the fold's training part: no scored (held-out) image in it
            held_out = ml.evaluation.validation_split(split, 0, 2).test_images
            assert not any((pool == image).all(axis=(1, 2)).any() for image in held_out)
        return real_finetune(encoder, images, labels, config, **kwargs)

    monkeypatch.setattr(ml.finetune, "finetune", recording_finetune)
    argv = ["--split", "validation", "--folds", "2", "--methods", "finetune,semisup", "--budgets", "6", "--seeds", "0"]
    argv += ["--checkpoint", str(checkpoint), "--finetune-preset", "tiny", "--unlabelled-weight", "0.5"]
    assert paper_benchmark.main([*argv, "--mirabest", str(archive), "--out", str(tmp_path / "out")]) == 0

    record = json.loads((tmp_path / "out" / "paper_benchmark_validation.json").read_text())
    assert sorted(r["method"] for r in record["results"]) == ["finetune", "semisup"]
    n_train_part = len(ml.evaluation.validation_split(split, 0, 2).train_labels)
    assert sorted(pools, key=str) == sorted([("tiny", None, 0.0), ("tiny", n_train_part, 0.5)], key=str)
    assert record["identity"]["unlabelled_weight"] == 0.5
    assert "FixMatch" in capsys.readouterr().out


def test_pose_probes_fit_the_fold_with_the_given_c_and_pseudo_label_only_its_training_part(tmp_path, monkeypatch):
    import ml.evaluation
    import ml.probes
    from ml.checkpoint import load_checkpoint, save_checkpoint
    from ml.config import get_config
    from ml.embed import embed_poses
    from ml.encoder import build_encoder
    from ml.evaluation import LINEAR_PROBE, error_rate, load_mirabest_confident_split, stratified_subset
    from tests.synthetic import mirabest_entries, write_mirabest_archive

    archive = write_mirabest_archive(tmp_path / "MiraBest_F_batches.tar.gz", mirabest_entries(per_code=8))
    split = load_mirabest_confident_split(archive)
    no_test = dataclasses.replace(split, test_images=split.test_images[:0], test_labels=split.test_labels[:0])
    monkeypatch.setattr(ml.evaluation, "load_mirabest_confident_split", lambda path: no_test)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", build_encoder(get_config("tiny").encoder, seed=0))
    unlabelled_sizes: list[int] = []
    real_self_training = ml.probes.self_training_probe

    def recording(train_features, train_labels, test_features, config, **kwargs):
        unlabelled_sizes.append(len(train_features))
        assert kwargs == {"share": 0.25, "rounds": 2} and config.C == 0.1
        return real_self_training(train_features, train_labels, test_features, config, **kwargs)

    monkeypatch.setattr(ml.probes, "self_training_probe", recording)
    argv = ["--split", "validation", "--folds", "2", "--methods", "linear-views,selftrain", "--budgets", "10"]
    argv += ["--seeds", "0-1", "--checkpoint", str(checkpoint), "--probe-c", "0.1", "--selftrain-share", "0.25"]
    argv += ["--selftrain-rounds", "2", "--threads", "1", "--mirabest", str(archive), "--out", str(tmp_path / "out")]
    assert paper_benchmark.main(argv) == 0

    record = json.loads((tmp_path / "out" / "paper_benchmark_validation.json").read_text())
    assert record["identity"]["probe_c"] == 0.1 and record["identity"]["selftrain"] == [0.25, 2]
    parts = [ml.evaluation.validation_split(split, fold, 2) for fold in (0, 1)]
    # Only the fold's training part is pseudo-labelled: never its scored sources.
    assert sorted(unlabelled_sizes) == sorted(len(part.train_labels) for part in parts)
    # The view-augmented rows are recomputed from the poses with C = 0.1.
    encoder = load_checkpoint(checkpoint).encoder
    probe = dataclasses.replace(LINEAR_PROBE, C=0.1)
    for result in (r for r in record["results"] if r["method"] == "linear-views"):
        part = parts[result["seed"] % 2]
        fit_predict = ml.probes.view_augmented_probe(
            embed_poses(encoder, part.train_images, device="cpu"),
            part.train_labels,
            embed_poses(encoder, part.test_images, device="cpu"),
            probe,
        )
        predictions = fit_predict(stratified_subset(part.train_labels, 10, result["seed"]), result["seed"])
        assert result["error"] == pytest.approx(error_rate(predictions, part.test_labels))
    assert sorted(r["method"] for r in record["results"]) == ["linear-views"] * 2 + ["selftrain"] * 2

"""The paper benchmark command: resumable runs, stopping on time, sizing pretraining to a budget."""

from __future__ import annotations

import json

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
    ],
)
def test_contradictory_time_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        paper_benchmark.parse_args(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

"""The survey-scale benchmark: its synthetic survey, its bounds, and a whole run at a tiny size on SQLite."""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from bench import survey_scale


def test_positions_lie_in_the_footprint_and_far_enough_apart_never_to_be_cross_matched():
    from scipy.spatial import cKDTree

    ra, dec = survey_scale.footprint_positions(20_000, seed=3)

    inside = np.zeros(len(ra), dtype=bool)
    for ra0, ra1, dec0, dec1 in survey_scale.FOOTPRINT:
        shifted = np.where(ra < ra0, ra + 360.0, ra)
        inside |= (shifted >= ra0) & (shifted <= ra1) & (dec >= dec0) & (dec <= dec1)
    assert inside.all()
    xyz = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)), np.cos(np.radians(dec)) * np.sin(np.radians(ra)),
                    np.sin(np.radians(dec))], axis=1)  # fmt: skip
    closest, _ = cKDTree(xyz).query(xyz, k=2)
    separation_arcsec = np.degrees(2 * np.arcsin(closest[:, 1] / 2)) * 3600
    assert separation_arcsec.min() >= survey_scale.MIN_SEPARATION_ARCSEC - 1e-6
    # Both parts of the footprint are used, the northern cap far more (it is ~7x larger).
    north = (ra >= 105) & (ra <= 255)
    assert 0.75 < north.mean() < 0.95


def test_a_survey_image_is_a_new_view_of_the_real_source_with_noise_at_the_survey_rms():
    base = np.zeros((300, 300), dtype=np.uint8)
    base[140:160, 100:130] = 255  # one lobe left of the centre

    first = survey_scale.survey_image(base, np.random.default_rng(1))
    again = survey_scale.survey_image(base, np.random.default_rng(1))
    other = survey_scale.survey_image(base, np.random.default_rng(2))

    assert first.shape == (150, 150) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)  # a source's own seed gives the same image at every size
    assert not np.allclose(first, other)
    blank_corner = first[:30, :30]
    assert abs(blank_corner.std() / survey_scale.FIRST_RMS_JY - 1) < 0.15
    low, high = survey_scale.PEAK_FLUX_JY
    assert low * 0.5 < first.max() < high * 1.1


def test_a_step_over_its_limit_is_stopped_and_reported(tmp_path):
    status, usage, wall = survey_scale.run_child(
        [sys.executable, "-c", "import time; time.sleep(60)"], {}, 1.0, tmp_path / "slow.log"
    )

    assert status is None
    assert wall < 30
    assert usage["peak_rss_mib"] > 0


def test_growth_flags_a_step_that_grows_faster_than_linearly():
    total = survey_scale.Metric("t", "s", "total", lambda r: None)
    per_request = survey_scale.Metric("p", "ms", "per_item", lambda r: None)
    sizes = [10_000, 100_000]

    assert survey_scale.growth(total, [10.0, 100.0], sizes) == ("x10.00 (N^1.00)", "")
    assert survey_scale.growth(total, [10.0, 400.0], sizes)[1] == "**faster than linear**"
    assert survey_scale.growth(per_request, [20.0, 25.0], sizes)[1] == ""
    assert survey_scale.growth(per_request, [20.0, 200.0], sizes)[1] == "**per request, grows with N**"
    assert survey_scale.growth(total, [survey_scale.Failure("over the limit"), 3.0], sizes) == ("-", "")


def test_a_tiny_campaign_runs_every_step_through_the_product(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "survey-scale-test-" + "x" * 40)
    # The smallest chunk: the encoder embedding of 300 sources is handed off in two chunks.
    monkeypatch.setenv("RGZ_EMBED_CHUNK_ROWS", "256")
    out = tmp_path / "out"
    argv = ["--sizes", "300", "--fits", "30", "--volunteers", "20", "--database-url", "sqlite", "--out", str(out),
            "--shared", str(tmp_path / "no-shared-data"), "--dihedral-max", "0", "--page-repeats", "1",
            "--labelling-seconds", "2", "--web-volunteers", "3", "--web-workers", "1", "--no-docs"]  # fmt: skip

    assert survey_scale.main(argv) == 0

    results = json.loads((out / "results-300.json").read_text())
    for step in ("setup", "bulk", "ingest_fits", "votes", "consensus", "embed_pca", "refresh_cold", "embed_centre",
                 "retrain", "refresh", "sessions", "database_size"):  # fmt: skip
        assert results[step]["ok"], (step, results[step].get("error"))
    assert results["ingest_fits"]["items"] == 30
    assert results["bulk"]["items"] == 270  # every planned source is its own: nothing merged by position
    votes = results["votes"]
    assert votes["items"] == votes["votes"] + votes["gold_votes"]
    assert 0 < votes["retired"] < 300 - votes["gold"]
    assert results["consensus"]["items"] > 0
    assert results["embed_dihedral"]["skipped"]
    assert results["embed_centre"]["result"]["chunks_run_here"] == 2
    assert results["embed_centre"]["result"]["n_sources"] == 300
    web = results["web"]
    assert web["labelling"]["next"]["errors"] == 0 and web["labelling"]["votes"] > 0
    assert not {name: page["error"] for name, page in web["pages"].items() if page["errors"]}
    # Search by image was answered: its encoder ran in the query worker, not in gunicorn's.
    assert web["pages"]["search by image (POST FITS)"]["requests"] > 0 and web["query_worker_memory"]["rss_mib"] > 0
    exports = web["exports"]
    assert all(export["ok"] and export["bytes"] > 0 for export in exports.values()), exports
    assert all(export["streamed"] for export in exports.values()), exports  # CSV, VOTable and FITS alike
    memory = next(iter(web["memory_after_pages"].values()))
    assert 0 < memory["pss_mib"] <= memory["rss_mib"]
    table = (out / "survey_scale.md").read_text()
    assert f"| votes stored | votes | {votes['items']:,} |" in table
    assert "| database size | MiB |" in table
    record = json.loads((out / "survey_scale.json").read_text())
    assert record["sizes"] == [300]
    assert not math.isnan(record["results"]["300"]["total_s"])
    assert not (out / "work" / "fits").exists()  # the FITS files are removed without --keep
    assert "| step / measure |" in capsys.readouterr().out

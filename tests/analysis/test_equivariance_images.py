"""``styleforge equivariance --save-images``: the kept pairs are the metric's, the valid region is marked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import styleforge
from styleforge.analysis.equivariance_images import EquivarianceImageCollector, mark_invalid
from styleforge.cli.main import cli
from styleforge.metrics.equivariance import EquivarianceConfig, compute_equivariance, psnr_db


def test_mark_invalid_greys_out_and_outlines():
    rgb = np.zeros((4, 4, 3), np.uint8)
    valid = np.zeros((4, 4), bool)
    valid[1:3, 1:3] = True
    out = mark_invalid(rgb, valid, scale=2)
    assert out.shape == (8, 8, 3)
    assert (out[0, 0] > 100).all()  # invalid: pulled towards grey
    assert out[2, 2].tolist() == [0, 255, 255] and out[5, 5].tolist() == [0, 255, 255]  # edge of the valid square
    assert out[3, 3].tolist() == [0, 0, 0]  # inside: untouched


def test_collected_pairs_reproduce_the_metric():
    G = styleforge.create_model("stylegan3-t-tiny").eval()
    collector = EquivarianceImageCollector(num_images=4)
    config = EquivarianceConfig(num_samples=4, batch_size=2, eqt_frac=True, eqr=True, seed=5)
    results = compute_equivariance(G, config, on_batch=collector)
    assert set(collector.kept) == {"eqt_frac", "eqr"}
    for name, pairs in collector.kept.items():
        assert len(pairs) == 4
        err = sum(float(((r - g) ** 2 * m).sum()) for r, g, m in pairs)
        count = sum(float(m.sum()) for _, _, m in pairs)
        assert psnr_db(err, count) == pytest.approx(results[name], abs=1e-6)
    # collecting does not change the numbers
    assert compute_equivariance(G, config) == pytest.approx(results)


def test_equivariance_cli_save_images(tmp_path):
    out = tmp_path / "eq"
    result = CliRunner().invoke(cli, ["equivariance", "--model", "stylegan3-r-tiny", "--num", "3", "--batch-size",
                                      "1", "--save-images", str(out), "--num-images", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "equivariance.json").read_text())
    assert set(summary["results_db"]) == {"eqt_int", "eqt_frac", "eqr"} and summary["num_images"] == 2
    for key, label in (("eqt_int", "EQ-T "), ("eqt_frac", "EQ-T_frac"), ("eqr", "EQ-R")):
        assert f"{label}" in result.output and f"{summary['results_db'][key]:8.2f} dB" in result.output
        with Image.open(out / f"equivariance_{key}.png") as im:
            pixels = np.asarray(im.convert("RGB"))
        assert pixels.shape[1] >= 3 * 160  # three panels per sample
        assert ((pixels == [0, 255, 255]).all(-1)).sum() > 100  # the valid region's outline is drawn

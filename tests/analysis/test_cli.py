"""``styleforge spectrum`` and ``styleforge video`` on a saved tiny StyleGAN-XL network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import styleforge
from styleforge.analysis import video as video_mod
from styleforge.cli.main import cli


@pytest.fixture(scope="module")
def saved_network(tmp_path_factory):
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny", c_dim=0).eval()
    path = tmp_path_factory.mktemp("net") / "tiny-xl"
    styleforge.save(path, G_ema=G)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for i in range(6):
        Image.fromarray(rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_spectrum_cli(saved_network, image_folder, tmp_path):
    out = tmp_path / "spec"
    args = ["spectrum", "--network", str(saved_network), "--data", str(image_folder), "--num", "4"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "generated: 4 images, dataset: 4 images" in result.output
    summary = json.loads((out / "spectrum.json").read_text())
    assert summary["num_images"] == {"generated": 4, "dataset": 4}
    for name in ("spectrum_heatmap.png", "spectrum_slices.png", "spectrum_slices.csv", "samples.png"):
        assert (out / name).is_file()


def test_spectrum_cli_user_errors(saved_network, tmp_path):
    result = CliRunner().invoke(cli, ["spectrum", "--network", str(saved_network), "--out", str(tmp_path),
                                      "--db-range", "10", "0", "--device", "cpu"])
    assert result.exit_code != 0 and "low < high" in result.output and "Traceback" not in result.output


def test_video_cli_gif_fallback(saved_network, tmp_path, monkeypatch):
    monkeypatch.setattr(video_mod, "_import_imageio", lambda: None)
    out = tmp_path / "v.mp4"
    result = CliRunner().invoke(cli, ["video", "--network", str(saved_network), "--seeds", "0-3",
                                      "--frames-per-seed", "2", "--grid", "2x1", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Note:" in result.output and "v.gif" in result.output
    with Image.open(tmp_path / "v.gif") as im:
        assert im.n_frames == 4 and im.size == (32, 16)


def test_video_cli_rotate_and_bad_seeds(saved_network, tmp_path):
    result = CliRunner().invoke(cli, ["video", "--network", str(saved_network), "--seeds", "3",
                                      "--frames-per-seed", "3", "--mode", "rotate", "--out",
                                      str(tmp_path / "r.gif"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["video", "--network", str(saved_network), "--seeds", "a-b",
                                      "--out", str(tmp_path / "x.gif"), "--device", "cpu"])
    assert result.exit_code != 0 and "Bad seed" in result.output and "Traceback" not in result.output


def test_analysis_commands_accept_builtin_networks(image_folder, tmp_path, monkeypatch):
    """``--network builtin:emoji`` is a network spec, not a path: spectrum and video must accept it."""
    monkeypatch.setattr(video_mod, "_import_imageio", lambda: None)
    result = CliRunner().invoke(cli, ["video", "--network", "builtin:emoji", "--seeds", "0-1", "--frames-per-seed",
                                      "2", "--out", str(tmp_path / "v.gif"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "v.gif") as im:
        assert im.n_frames == 4 and im.size == (32, 32)
    result = CliRunner().invoke(cli, ["spectrum", "--network", "builtin:emoji", "--data", str(image_folder),
                                      "--num", "4", "--out", str(tmp_path / "spec"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["video", "--network", str(tmp_path / "missing"), "--seeds", "0-1",
                                      "--out", str(tmp_path / "w.gif"), "--device", "cpu"])
    assert result.exit_code != 0 and "does not exist" in result.output

"""``styleforge convert IN OUT``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from styleforge.cli.main import cli
from styleforge.loading import load
from tests.conftest import reference_file
from tests.convert.test_official_stylegan2 import C_DIM, Z_DIM, make_networks, official_bytes


def test_convert_official_pickle_then_generate_identically(tmp_path):
    G, D = make_networks()
    pkl = tmp_path / "snap.pkl"
    pkl.write_bytes(official_bytes(G, D, augment_p=0.25, training_set_kwargs={"path": "set.zip"}))
    out = tmp_path / "converted"
    result = CliRunner().invoke(cli, ["convert", str(pkl), str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for text in (
        "official format",
        "G_ema",
        "StyleGAN2Generator",
        "StyleGAN2Discriminator",
        "augment p = 0.25",
    ):
        assert text in result.output
    extra = json.loads((out / "config.json").read_text())["extra"]
    assert extra["augment_p"] == 0.25 and extra["training_set_kwargs"] == {"path": "set.zip"}
    assert extra["source_format"] == "official"
    loaded = load(out)
    assert loaded.augment_p == 0.25 and loaded.training_set_kwargs == {"path": "set.zip"}
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(0))
    c = torch.eye(C_DIM)[:2]
    with torch.no_grad():
        assert torch.equal(loaded.G_ema(z, c, noise_mode="const"), G(z, c, noise_mode="const"))
        # styleforge -> styleforge also works (a copy)
    again = tmp_path / "again"
    assert CliRunner().invoke(cli, ["convert", str(out), str(again)]).exit_code == 0
    with torch.no_grad():
        assert torch.equal(load(again).G(z, c, noise_mode="const"), G(z, c, noise_mode="const"))


def test_convert_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    result = CliRunner().invoke(cli, ["convert", str(bad), str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.reference
def test_convert_reference_snapshot(tmp_path):
    out = tmp_path / "sg2"
    result = CliRunner().invoke(cli, ["convert", str(reference_file("sg2_skip_stripped.pkl")), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert set(load(out).networks()) == {"G", "D", "G_ema"}

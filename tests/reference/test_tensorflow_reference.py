"""A TensorFlow-era StyleGAN2 pickle ``(G, D, Gs)`` reproduces NVIDIA's own conversion of it (``legacy.py``
followed by the official PyTorch networks): every output of ``../shared/reference/tf_sg2_skip.npz`` within 1e-4.
Run with ``-s`` to see the measured errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import styleforge
from styleforge.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from tests.conftest import reference_file
from tests.reference.test_stylegan2_reference import PSI_CASES, _check

pytestmark = pytest.mark.reference
LABEL = "tf_sg2_skip"


@pytest.fixture(scope="module")
def snap() -> dict:
    ref = np.load(reference_file(f"{LABEL}.npz"))
    loaded = styleforge.load(reference_file(f"{LABEL}.pkl"))
    return {"ref": {k: ref[k] for k in ref.files}, "loaded": loaded}


def test_networks_and_config(snap):
    loaded = snap["loaded"]
    assert loaded.source == "official"
    assert type(loaded.G) is StyleGAN2Generator and type(loaded.G_ema) is StyleGAN2Generator
    assert type(loaded.D) is StyleGAN2Discriminator
    cfg = loaded.G_ema.config
    # fmap_base 1024 in TensorFlow is channel_base 2048 here, as in the official conversion
    assert (cfg.channel_base, cfg.channel_max, cfg.mapping_layers, cfg.architecture) == (2048, 128, 2, "skip")
    assert loaded.D.config.mbstd_group_size == 4


@torch.no_grad()
def test_mapping_and_images(snap):
    ref, G = snap["ref"], snap["loaded"].G_ema
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    _check(LABEL, "w_avg", G.mapping.w_avg, ref["w_avg"])
    for suffix, (psi, cutoff) in PSI_CASES.items():
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        _check(LABEL, f"ws_{suffix}", ws, ref[f"ws_{suffix}"])
        img = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
        _check(LABEL, f"img_{suffix}_const", img, ref[f"img_{suffix}_const"])
    _check(LABEL, "img_psi1_none", G(z, c, noise_mode="none"), ref["img_psi1_none"])
    _check(LABEL, "img_psi1_const_nonfused", G(z, c, noise_mode="const", fused_modconv=False),
           ref["img_psi1_const_nonfused"])
    ws = torch.from_numpy(ref["ws_psi1"])
    _check(LABEL, "img_synthesis_from_ws_psi1", G.synthesis(ws, noise_mode="const"), ref["img_synthesis_from_ws_psi1"])


@torch.no_grad()
def test_discriminator_logits(snap):
    ref, D = snap["ref"], snap["loaded"].D
    c = torch.from_numpy(ref["c"])
    for suffix in ("psi1", "psi0.7"):
        _check(LABEL, f"d_logits_img_{suffix}", D(torch.from_numpy(ref[f"img_{suffix}_const"]), c),
               ref[f"d_logits_img_{suffix}"])
    _check(LABEL, "d_logits_randn", D(torch.from_numpy(ref["d_input_randn"]), c), ref["d_logits_randn"])


def test_convert_cli_writes_our_format(tmp_path, snap):
    from click.testing import CliRunner

    from styleforge.cli.main import cli

    out = tmp_path / "converted"
    result = CliRunner().invoke(cli, ["convert", str(reference_file(f"{LABEL}.pkl")), str(out)])
    assert result.exit_code == 0, result.output
    again = styleforge.load(out)
    ref = snap["ref"]
    with torch.no_grad():
        img = again.G_ema(torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"]), noise_mode="const")
    _check(LABEL, "img_psi1_const (after convert)", img, ref["img_psi1_const"])

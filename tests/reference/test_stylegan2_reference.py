"""Official StyleGAN2 snapshots (unconditional, conditional, 2021-era legacy pickle) reproduce NVIDIA's
outputs.

Every output of ``../shared/reference/sg2_*.npz`` is compared with max absolute error <= 1e-4 in float32 on
CPU. Run with ``-s`` to see the measured errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styleforge.convert.official import load_official_pickle
from styleforge.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from tests.conftest import reference_file

pytestmark = pytest.mark.reference

ATOL = 1e-4
# label -> (entry whose .npz holds the outputs, pickle)
ENTRIES = {
    "sg2_skip": ("sg2_skip", "sg2_skip_stripped.pkl"),
    "sg2_skip_cond": ("sg2_skip_cond", "sg2_skip_cond_stripped.pkl"),
    "sg2_skip_legacy": ("sg2_skip", "sg2_skip_legacy_stripped.pkl"),
}
# key suffix of the .npz -> (truncation_psi, truncation_cutoff)
PSI_CASES = {"psi1": (1.0, None), "psi0.7": (0.7, None), "psi0.5_cutoff4": (0.5, 4)}

_CACHE: dict[str, dict] = {}


def _snapshot(label: str) -> dict:
    """The converted snapshot and the reference arrays of one entry (converted once per session)."""
    if label not in _CACHE:
        npz_name, pkl_name = ENTRIES[label]
        npz = np.load(reference_file(f"{npz_name}.npz"))
        snap = load_official_pickle(reference_file(pkl_name))
        _CACHE[label] = {"label": label, "ref": {k: npz[k] for k in npz.files}, **snap}
    return _CACHE[label]


@pytest.fixture(params=list(ENTRIES), ids=list(ENTRIES))
def snap(request) -> dict:
    return _snapshot(request.param)


def _check(label: str, what: str, ours: torch.Tensor, ref: np.ndarray) -> None:
    ours_np = ours.detach().cpu().numpy()
    assert ours_np.shape == ref.shape, f"{label} {what}: shape {ours_np.shape} vs reference {ref.shape}"
    err = float(np.abs(ours_np.astype(np.float64) - ref.astype(np.float64)).max())
    print(f"[{label}] {what}: max abs err {err:.3e}")
    assert err <= ATOL, f"{label} {what}: max abs err {err:.3e} > {ATOL}"


def test_networks_are_converted_to_stylegan2(snap):
    assert type(snap["G"]) is StyleGAN2Generator and type(snap["G_ema"]) is StyleGAN2Generator
    assert type(snap["D"]) is StyleGAN2Discriminator
    assert not snap["G_ema"].training and not snap["D"].training


@torch.no_grad()
def test_mapping_and_w_avg(snap):
    ref, G, label = snap["ref"], snap["G_ema"], snap["label"]
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    _check(label, "w_avg", G.mapping.w_avg, ref["w_avg"])
    for suffix, (psi, cutoff) in PSI_CASES.items():
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        _check(label, f"ws_{suffix}", ws, ref[f"ws_{suffix}"])


@torch.no_grad()
def test_images_const_noise(snap):
    ref, G, label = snap["ref"], snap["G_ema"], snap["label"]
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    for suffix, (psi, cutoff) in PSI_CASES.items():
        img = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
        _check(label, f"img_{suffix}_const", img, ref[f"img_{suffix}_const"])


@torch.no_grad()
def test_synthesis_from_ws_and_per_block_features(snap):
    ref, G, label = snap["ref"], snap["G_ema"], snap["label"]
    feats: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(G.synthesis, f"b{res}").register_forward_hook(
            lambda _m, _i, out, res=res: feats.update({f"b{res}/x": out[0], f"b{res}/img": out[1]})
        )
        for res in G.synthesis.block_resolutions
    ]
    try:
        img = G.synthesis(torch.from_numpy(ref["ws_psi1"]), noise_mode="const")
    finally:
        for h in hooks:
            h.remove()
    for key in [k for k in ref if k.startswith("feat/synthesis.")]:
        block_and_part = key[len("feat/synthesis.") :]
        _check(label, key, feats[block_and_part][:1], ref[key])
    _check(label, "img_synthesis_from_ws_psi1", img, ref["img_synthesis_from_ws_psi1"])


@torch.no_grad()
def test_noise_none_and_nonfused_modconv(snap):
    ref, G, label = snap["ref"], snap["G_ema"], snap["label"]
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    _check(label, "img_psi1_none", G(z, c, noise_mode="none"), ref["img_psi1_none"])
    nonfused = G(z, c, noise_mode="const", fused_modconv=False)
    _check(label, "img_psi1_const_nonfused", nonfused, ref["img_psi1_const_nonfused"])


@torch.no_grad()
def test_G_is_not_G_ema(snap):
    ref, label = snap["ref"], snap["label"]
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    img = snap["G"](z, c, noise_mode="const")
    _check(label, "img_psi1_const_from_G_not_ema", img, ref["img_psi1_const_from_G_not_ema"])
    assert float((img - torch.from_numpy(ref["img_psi1_const"])).abs().max()) > 100 * ATOL


@torch.no_grad()
def test_discriminator_logits(snap):
    ref, D, label = snap["ref"], snap["D"], snap["label"]
    c = torch.from_numpy(ref["c"])
    for suffix in ("psi1", "psi0.7"):
        logits = D(torch.from_numpy(ref[f"img_{suffix}_const"]), c)
        _check(label, f"d_logits_img_{suffix}", logits, ref[f"d_logits_img_{suffix}"])
    _check(label, "d_logits_randn", D(torch.from_numpy(ref["d_input_randn"]), c), ref["d_logits_randn"])

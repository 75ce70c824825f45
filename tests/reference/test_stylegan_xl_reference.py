"""The official StyleGAN-XL stem snapshot (sgxl_stem_16) reproduces the official outputs to <= 1e-4.

Run with ``-s`` to see the maximum absolute errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styleforge.convert.official import load_official_pickle
from styleforge.models.stylegan_xl import StyleGANXLGenerator
from styleforge.ops.transforms import transform_matrix, user_transform_matrix
from tests.conftest import reference_file

pytestmark = pytest.mark.reference

ATOL = 1e-4
ENTRY = "sgxl_stem_16"
PSI_CASES = {"psi1": (1.0, None), "psi0.7": (0.7, None), "psi0.5_cutoff4": (0.5, 4)}
# user-facing (translate, rotate) of the reference's transform cases
TRANSFORM_CASES = ("translate", "rotate", "both")

_CACHE: dict[str, dict] = {}


def _snapshot() -> dict:
    if ENTRY not in _CACHE:
        npz = np.load(reference_file(f"{ENTRY}.npz"))
        nets = load_official_pickle(reference_file(f"{ENTRY}_stripped.pkl"))
        _CACHE[ENTRY] = {"ref": {k: npz[k] for k in npz.files}, **nets}
    return _CACHE[ENTRY]


def _check(what: str, ours: torch.Tensor, ref: np.ndarray, atol: float = ATOL) -> float:
    ours_np = ours.detach().cpu().numpy().astype(np.float64)
    assert ours_np.shape == ref.shape, f"{what}: shape {ours_np.shape} vs reference {ref.shape}"
    err = float(np.abs(ours_np - ref.astype(np.float64)).max())
    print(f"  {ENTRY} {what}: max abs err {err:.3e}")
    assert err <= atol, f"{what}: max abs err {err:.3e} > {atol}"
    return err


@pytest.fixture
def snap() -> dict:
    return _snapshot()


def _inputs(s: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(s["ref"]["z"]), torch.from_numpy(s["ref"]["c"])


def test_converted_structure(snap):
    G = snap["G_ema"]
    assert isinstance(G, StyleGANXLGenerator)
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution) == (64, 1000, 128, 16)
    assert G.num_ws == snap["ref"]["ws_psi1"].shape[1] == 12
    assert G.mapping.w_avg.shape == (1000, 128)
    assert snap["D"] is None


def test_mapping_all_psi_cases_and_w_avg(snap):
    G, ref = snap["G_ema"], snap["ref"]
    z, c = _inputs(snap)
    _check("w_avg", G.mapping.w_avg, ref["w_avg"])
    with torch.no_grad():
        for key, (psi, cutoff) in PSI_CASES.items():
            _check(
                f"ws_{key}", G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff), ref[f"ws_{key}"]
            )


def test_images_all_psi_cases(snap):
    G, ref = snap["G_ema"], snap["ref"]
    z, c = _inputs(snap)
    with torch.no_grad():
        for key, (psi, cutoff) in PSI_CASES.items():
            img = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
            _check(f"img_{key}_const", img, ref[f"img_{key}_const"])


def test_synthesis_from_ws_and_layer_features(snap):
    G, ref = snap["G_ema"], snap["ref"]
    ws = torch.from_numpy(ref["ws_psi1"])
    feats: dict[str, torch.Tensor] = {}
    hooks = [G.synthesis.input.register_forward_hook(lambda m, i, o: feats.__setitem__("synthesis.input", o))]
    for idx, layer in enumerate(G.synthesis.layers):
        name = f"synthesis.{G.synthesis.official_layer_name(idx)}"
        hooks.append(layer.register_forward_hook(lambda m, i, o, name=name: feats.__setitem__(name, o)))
    try:
        with torch.no_grad():
            img = G.synthesis(ws, noise_mode="const")
    finally:
        for h in hooks:
            h.remove()
    _check("img_synthesis_from_ws_psi1", img, ref["img_synthesis_from_ws_psi1"])
    feat_keys = [k for k in ref if k.startswith("feat/")]
    assert len(feat_keys) == len(G.synthesis.layers) + 1
    for key in feat_keys:
        _check(key, feats[key.removeprefix("feat/")][:1], ref[key])


@pytest.mark.parametrize("case", TRANSFORM_CASES)
def test_transforms(snap, case):
    G, ref = snap["G_ema"], snap["ref"]
    z, c = _inputs(snap)
    prefix = f"transform/{case}"
    user = ref[f"{prefix}/user_matrix"]
    # Recover (translate, rotate) from the user matrix and check our matrices against both stored ones.
    angle = float(np.degrees(np.arctan2(user[0, 1], user[0, 0])))
    translate = (float(user[0, 2]), float(user[1, 2]))
    np.testing.assert_allclose(user_transform_matrix(translate, angle), user, atol=1e-12)
    buffer = transform_matrix(translate, angle)
    _check(f"{case} buffer", buffer, ref[f"{prefix}/buffer"], atol=1e-6)
    with torch.no_grad():
        for key in ("psi1", "psi0.7"):
            psi = PSI_CASES[key][0]
            img = G(z, c, truncation_psi=psi, transform=buffer)
            _check(f"{case} img_{key} (transform argument)", img, ref[f"{prefix}/img_{key}_const"])
        # The official way: copy into the synthesis input's buffer.
        saved = G.synthesis.input.transform.clone()
        try:
            G.synthesis.input.transform.copy_(torch.from_numpy(ref[f"{prefix}/buffer"]))
            img = G(z, c, truncation_psi=1.0)
        finally:
            G.synthesis.input.transform.copy_(saved)
        _check(f"{case} img_psi1 (buffer)", img, ref[f"{prefix}/img_psi1_const"])


def test_G_differs_from_G_ema(snap):
    ref = snap["ref"]
    z, c = _inputs(snap)
    with torch.no_grad():
        img_G = snap["G"](z, c, noise_mode="const")
        img_ema = snap["G_ema"](z, c, noise_mode="const")
    _check("img_psi1_const_from_G_not_ema", img_G, ref["img_psi1_const_from_G_not_ema"])
    assert float((img_G - img_ema).abs().max()) > 100 * ATOL

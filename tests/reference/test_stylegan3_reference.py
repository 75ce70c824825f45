"""Official StyleGAN3 snapshots (T, R, and a 2021-era pickle) reproduce NVIDIA's outputs to <= 1e-4.

Run with ``-s`` to see the maximum absolute errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from styleforge.convert.official import convert_network, load_official_pickle
from styleforge.models.stylegan3 import StyleGAN3Generator
from styleforge.ops.transforms import transform_matrix, user_transform_matrix
from tests.conftest import reference_file

pytestmark = pytest.mark.reference

ATOL = 1e-4
# (entry whose .npz holds the outputs, pickle)
ENTRIES = [
    ("sg3_t_32", "sg3_t_32_stripped.pkl"),
    ("sg3_r_32", "sg3_r_32_stripped.pkl"),
    ("sg3_t_32", "sg3_t_32_legacy_stripped.pkl"),
]
IDS = ["sg3_t_32", "sg3_r_32", "sg3_t_32_legacy"]
# psi cases of the .npz: key suffix -> (truncation_psi, truncation_cutoff)
PSI_CASES = {"psi1": (1.0, None), "psi0.7": (0.7, None), "psi0.5_cutoff4": (0.5, 4)}
TRANSFORM_CASES = ("translate", "rotate", "both")

_CACHE: dict[str, dict] = {}


def _snapshot(npz_name: str, pkl_name: str) -> dict:
    """Converted networks (stubs for D) and the reference arrays; cached across the tests of one entry."""
    if pkl_name not in _CACHE:
        npz = np.load(reference_file(f"{npz_name}.npz"))
        pkl = reference_file(pkl_name)
        raw = load_official_pickle(pkl, convert=False)
        with torch.no_grad():
            nets = {k: convert_network(raw[k]) for k in ("G", "G_ema")}
        _CACHE[pkl_name] = {"ref": {k: npz[k] for k in npz.files}, "raw": raw, "pkl": pkl, **nets}
    return _CACHE[pkl_name]


def _report(what: str, ours: torch.Tensor, ref: np.ndarray) -> float:
    ours = ours.detach().cpu().numpy()
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs reference {ref.shape}"
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    print(f"  {what}: max abs err {err:.3e}")
    assert err <= ATOL, f"{what}: max abs err {err:.3e} > {ATOL}"
    return err


@pytest.fixture(params=list(zip(ENTRIES, IDS, strict=True)), ids=IDS)
def snap(request):
    (npz_name, pkl_name), label = request.param
    s = _snapshot(npz_name, pkl_name)
    print(f"\n[{label}]")
    return s


@pytest.fixture(params=list(zip(ENTRIES[:2], IDS[:2], strict=True)), ids=IDS[:2])
def snap_full(request):
    """The two distinct networks only (the legacy pickle holds the same weights as ``sg3_t_32``)."""
    (npz_name, pkl_name), label = request.param
    s = _snapshot(npz_name, pkl_name)
    print(f"\n[{label}]")
    return s


def _inputs(s: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(s["ref"]["z"]), torch.from_numpy(s["ref"]["c"])


def test_converted_class_and_structure(snap):
    G = snap["G_ema"]
    assert isinstance(G, StyleGAN3Generator)
    assert G.num_ws == snap["ref"]["ws_psi1"].shape[1]
    # Every official layer name is reproduced by our module structure.
    official = [n for n in snap["raw"]["G_ema"].get_submodule("synthesis").children if n != "input"]
    ours = [G.synthesis.official_layer_name(i) for i in range(len(G.synthesis.layers))]
    assert sorted(official) == sorted(ours)


def test_mapping_and_w_avg(snap):
    G, ref = snap["G_ema"], snap["ref"]
    z, c = _inputs(snap)
    _report("w_avg", G.mapping.w_avg, ref["w_avg"])
    with torch.no_grad():
        for key, (psi, cutoff) in PSI_CASES.items():
            _report(
                f"ws_{key}", G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff), ref[f"ws_{key}"]
            )


def test_images_all_psi(snap):
    G, ref = snap["G_ema"], snap["ref"]
    z, c = _inputs(snap)
    with torch.no_grad():
        for key, (psi, cutoff) in PSI_CASES.items():
            img = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
            _report(f"img_{key}_const", img, ref[f"img_{key}_const"])
        _report(
            "img_synthesis_from_ws_psi1",
            G.synthesis(torch.from_numpy(ref["ws_psi1"])),
            ref["img_synthesis_from_ws_psi1"],
        )


def test_features_localised(snap_full):
    """Each layer's output for sample 0 (``feat/*``) matches; on failure the first bad layer is named."""
    G, ref = snap_full["G_ema"], snap_full["ref"]
    feats: dict[str, torch.Tensor] = {}
    modules = {"synthesis.input": G.synthesis.input}
    modules.update(
        {f"synthesis.{G.synthesis.official_layer_name(i)}": m for i, m in enumerate(G.synthesis.layers)}
    )
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: feats.__setitem__(n, out[:1]))
        for n, m in modules.items()
    ]
    try:
        with torch.no_grad():
            G.synthesis(torch.from_numpy(ref["ws_psi1"]))
    finally:
        for h in handles:
            h.remove()
    keys = [f"feat/{name}" for name in modules]  # in network order
    assert set(keys) == {k for k in ref if k.startswith("feat/")}
    errors = {k: float(np.abs(feats[k[5:]].numpy() - ref[k]).max()) for k in keys}
    print(f"  feat/* (all {len(keys)} layers): max abs err {max(errors.values()):.3e}")
    first_bad = next((k for k in keys if errors[k] > ATOL), None)
    assert first_bad is None, f"first mismatching layer: {first_bad} (max abs err {errors[first_bad]:.3e})"


def _case_parameters(user_matrix: np.ndarray) -> tuple[tuple[float, float], float]:
    """(translate, rotate in degrees) of a user matrix ``[[cos, sin, tx], [-sin, cos, ty], [0, 0, 1]]``."""
    angle = math.degrees(math.atan2(user_matrix[0, 1], user_matrix[0, 0]))
    return (float(user_matrix[0, 2]), float(user_matrix[1, 2])), angle


def test_transform_matrix_matches_generation_script(snap):
    ref = snap["ref"]
    for case in TRANSFORM_CASES:
        translate, rotate = _case_parameters(ref[f"transform/{case}/user_matrix"])
        np.testing.assert_allclose(
            user_transform_matrix(translate, rotate), ref[f"transform/{case}/user_matrix"], atol=1e-12
        )
        _report(
            f"transform/{case}/buffer", transform_matrix(translate, rotate), ref[f"transform/{case}/buffer"]
        )
    # The cases themselves, spelled out: translate (0.1, -0.05); rotate 30 degrees.
    np.testing.assert_allclose(
        transform_matrix((0.1, -0.05)).numpy(), ref["transform/translate/buffer"], atol=1e-7
    )
    np.testing.assert_allclose(transform_matrix(rotate=30).numpy(), ref["transform/rotate/buffer"], atol=1e-7)


def test_transformed_images_argument_and_buffer(snap_full):
    snap = snap_full
    G, ref = snap["G_ema"], snap["ref"]
    z, c = _inputs(snap)
    buffer = G.synthesis.input.transform
    original = buffer.clone()
    with torch.no_grad():
        for case in TRANSFORM_CASES:
            m = transform_matrix(*_case_parameters(ref[f"transform/{case}/user_matrix"]))
            for key in ("psi1", "psi0.7"):
                psi, cutoff = PSI_CASES[key]
                expected = ref[f"transform/{case}/img_{key}_const"]
                # Stateless: the argument overrides the buffer for this call only.
                _report(
                    f"transform/{case}/img_{key}_const (transform=)",
                    G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, transform=m),
                    expected,
                )
                assert torch.equal(buffer, original)
                if key != "psi1":
                    continue
                # The official way: write the buffer.
                buffer.copy_(m)
                try:
                    _report(
                        f"transform/{case}/img_{key}_const (buffer)",
                        G(z, c, truncation_psi=psi, truncation_cutoff=cutoff),
                        expected,
                    )
                finally:
                    buffer.copy_(original)


def test_g_not_ema(snap):
    G, ref = snap["G"], snap["ref"]
    z, c = _inputs(snap)
    with torch.no_grad():
        _report("img_psi1_const_from_G_not_ema", G(z, c), ref["img_psi1_const_from_G_not_ema"])


def test_discriminator_logits(snap):
    """The D of a StyleGAN3 snapshot is a StyleGAN2 discriminator (converted by the StyleGAN2 converter)."""
    ref = snap["ref"]
    _, c = _inputs(snap)
    with torch.no_grad():
        D = convert_network(snap["raw"]["D"])  # the StyleGAN2 converter; a failure here is a real failure
    with torch.no_grad():
        for key in ("psi1", "psi0.7"):
            _report(
                f"d_logits_img_{key}",
                D(torch.from_numpy(ref[f"img_{key}_const"]), c),
                ref[f"d_logits_img_{key}"],
            )
        _report("d_logits_randn", D(torch.from_numpy(ref["d_input_randn"]), c), ref["d_logits_randn"])


def test_styleforge_load_and_save_roundtrip(snap_full, tmp_path):
    """``styleforge.load`` reads the official pickle; our own format then round-trips exactly."""
    import styleforge

    ref = snap_full["ref"]
    pkl = snap_full["pkl"]
    loaded = styleforge.load(pkl)
    G = loaded.generator
    assert isinstance(G, StyleGAN3Generator)
    z, c = _inputs(snap_full)
    with torch.no_grad():
        _report("styleforge.load(pkl): img_psi1_const", G(z, c), ref["img_psi1_const"])
    styleforge.save(tmp_path / "net", G=loaded.G, D=loaded.D, G_ema=loaded.G_ema)
    again = styleforge.load(tmp_path / "net")
    assert again.G_ema.config == G.config
    ours, theirs = G.state_dict(), again.G_ema.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

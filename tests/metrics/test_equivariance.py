"""Equivariance metrics: resampling helpers, PSNR, an ideal and a broken generator, StyleGAN3 vs StyleGAN2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import styleforge
from styleforge.metrics.equivariance import (
    EquivarianceConfig,
    affine_bandlimit_filter,
    apply_fractional_pseudo_rotation,
    apply_fractional_rotation,
    apply_fractional_translation,
    apply_integer_translation,
    compute_equivariance,
    psnr_db,
    supports_input_transform,
    with_fourier_input,
)
from styleforge.metrics.registry import MetricContext, compute_metric
from styleforge.utils.errors import UserInputError

RES = 32


def _plane_wave(fx: float, fy: float, shift=(0.0, 0.0), res: int = RES) -> torch.Tensor:
    """``cos(2 pi (fx (x - sx) + fy (y - sy)))`` on pixel centres, ``[1, 1, res, res]``."""
    coords = torch.arange(res, dtype=torch.float64) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    v = torch.cos(2 * math.pi * (fx * (x - shift[0]) + fy * (y - shift[1])))
    return v.float()[None, None]


def test_psnr_convention():
    # MSE 1 with peak-to-peak 2 (images in [-1, 1]) is 20 log10(2) = 6.02 dB; MSE 0.01 adds 20 dB.
    assert psnr_db(5.0, 5.0) == pytest.approx(20 * math.log10(2))
    assert psnr_db(0.01, 1.0) == pytest.approx(20 * math.log10(2) + 20)
    assert psnr_db(0.0, 3.0) == math.inf
    with pytest.raises(ValueError):
        psnr_db(1.0, 0.0)


def test_integer_translation_is_an_exact_shift():
    x = torch.randn(2, 3, 8, 10)
    out, mask = apply_integer_translation(x, 2 / 10, -1 / 8)  # 2 px right, 1 px up
    torch.testing.assert_close(out[:, :, :7, 2:], x[:, :, 1:, :8])
    assert mask.sum() == 2 * 3 * 7 * 8
    assert out[:, :, 7:, :].abs().sum() == 0 and out[:, :, :, :2].abs().sum() == 0
    assert apply_integer_translation(x, 1.0, 0.0)[1].sum() == 0  # moved out entirely


def test_fractional_translation_of_integer_shift_matches_integer_shift():
    x = torch.randn(1, 2, 16, 16)
    frac, fmask = apply_fractional_translation(x, 3 / 16, 2 / 16)
    ref, imask = apply_integer_translation(x, 3 / 16, 2 / 16)
    assert fmask.sum() > 0 and bool((fmask <= imask).all())
    torch.testing.assert_close(frac * fmask, ref * fmask, atol=1e-5, rtol=0)


def test_fractional_translation_of_a_smooth_wave():
    wave = _plane_wave(0.07, 0.04)
    shifted, mask = apply_fractional_translation(wave, 0.3 / RES, -1.7 / RES)
    expected = _plane_wave(0.07, 0.04, shift=(0.3, -1.7))
    err = float(((shifted - expected) * mask).abs().max())
    wrong_way = float(((shifted - _plane_wave(0.07, 0.04, shift=(-0.3, 1.7))) * mask).abs().max())
    # Lanczos-3 interpolation error at ~0.08 cycles/pixel is ~1e-2; the opposite direction is off by ~1
    assert mask.sum() > 0.5 * RES * RES and err < 2e-2 and wrong_way > 0.5, (err, wrong_way)


def test_rotation_of_a_smooth_wave():
    """Rotating a wave by +a gives the wave with its frequency vector rotated by +a about the centre."""
    fx, fy = 0.08, 0.03
    angle = math.radians(25)
    # Coordinates relative to the image centre: the rotation is about the centre.
    coords = torch.arange(RES, dtype=torch.float64) + 0.5 - RES / 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    wave = torch.cos(2 * math.pi * (fx * x + fy * y)).float()[None, None]
    rotated, mask = apply_fractional_rotation(wave, angle)
    # Try both orientations: the correct one must fit far better.
    errs = []
    for sign in (1, -1):
        c, s = math.cos(sign * angle), math.sin(sign * angle)
        gx, gy = c * fx - s * fy, s * fx + c * fy
        expected = torch.cos(2 * math.pi * (gx * x + gy * y)).float()[None, None]
        errs.append(float(((rotated - expected) * mask).abs().max()))
    assert mask.sum() > 0.2 * RES * RES
    assert min(errs) < 0.05 and max(errs) > 0.3, errs
    # the pseudo-rotation filter keeps a low-frequency wave nearly unchanged
    pseudo, pmask = apply_fractional_pseudo_rotation(wave, angle)
    assert float(((pseudo - wave) * pmask).abs().max()) < 0.05


def test_affine_filter_partition_of_unity():
    f = affine_bandlimit_filter(torch.eye(3), a=3, amax=6, up=4)
    assert f.shape == (47, 47)
    padded = torch.nn.functional.pad(f, [0, 1, 0, 1]).reshape(12, 4, 12, 4)
    torch.testing.assert_close(padded.sum([0, 2]), torch.full((4, 4), 1 / 16), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Whole-metric checks with synthetic generators.


class _WaveGenerator(nn.Module):
    """A 'generator' that renders a band-limited sum of plane waves at (optionally) transformed coordinates.

    With ``follow_transform=True`` it is exactly equivariant (up to the resampling filters of the metric);
    with ``False`` it ignores the transform and the metric must report poor equivariance.
    """

    def __init__(self, follow_transform: bool, res: int = RES) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels, self.num_ws = (
            4,
            0,
            4,
            res,
            1,
            1,
        )
        self.follow = follow_transform
        gen = torch.Generator().manual_seed(0)
        angles = torch.rand(6, generator=gen) * 2 * math.pi
        radii = 1 + torch.rand(6, generator=gen) * 3  # cycles per image, far below the Nyquist rate res / 2
        self.register_buffer("freqs", torch.stack([angles.cos(), angles.sin()], 1) * radii[:, None])
        self.mapping = lambda z, c, truncation_psi=1: z[:, None, :]
        self.synthesis = self._Synthesis(self)

    class _Synthesis(nn.Module):
        def __init__(self, owner) -> None:
            super().__init__()
            self.owner = [owner]

        def forward(self, ws, transform=None, noise_mode="const"):
            g = self.owner[0]
            n = ws.shape[0]
            coords = (torch.arange(g.img_resolution, dtype=torch.float32) + 0.5) / g.img_resolution - 0.5
            y, x = torch.meshgrid(coords, coords, indexing="ij")
            pts = torch.stack([x, y, torch.ones_like(x)], -1)  # [H, W, 3] in image units
            if g.follow and transform is not None:
                pts = pts @ transform.t()
            phase = pts[..., :2] @ g.freqs.t()  # [H, W, K]
            img = torch.cos(2 * math.pi * phase + ws[:, 0, :1, None, None].reshape(n, 1, 1, 1)).mean(-1)
            return img[:, None] * 0.8


def test_metric_on_ideal_and_broken_generators():
    cfg = EquivarianceConfig(num_samples=8, batch_size=4, eqt_int=True, eqt_frac=True, eqr=True)
    ideal = compute_equivariance(_WaveGenerator(True), cfg)
    broken = compute_equivariance(_WaveGenerator(False), cfg)
    for label, eq in (("ideal", ideal), ("broken", broken)):
        print(f"wave generator, {label}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in eq.items()))
    assert ideal["eqt_int"] > 60 and ideal["eqt_frac"] > 35 and ideal["eqr"] > 30, ideal
    assert all(v < 25 for v in broken.values()), broken
    assert all(ideal[k] > broken[k] + 15 for k in ideal)


def test_stylegan3_more_equivariant_than_stylegan2():
    """Same tiny configuration (16 px, 32 channels, random init): T beats StyleGAN2 (with Fourier input, the
    paper's config B) on EQ-T, R beats it on EQ-R."""
    cfg = EquivarianceConfig(num_samples=8, batch_size=4, eqt_int=True, eqt_frac=True, eqr=True, seed=1)
    results = {}
    for name in ("stylegan3-t-tiny", "stylegan3-r-tiny", "stylegan2-tiny"):
        torch.manual_seed(0)
        G = styleforge.create_model(name)
        if name == "stylegan2-tiny":
            assert not supports_input_transform(G)
            with pytest.raises(UserInputError, match="config B"):
                compute_equivariance(G, cfg)
            G = with_fourier_input(G)
        results[name] = compute_equivariance(G, cfg)
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in results[name].items()))
    sg2, t, r = results["stylegan2-tiny"], results["stylegan3-t-tiny"], results["stylegan3-r-tiny"]
    assert t["eqt_int"] > sg2["eqt_int"] + 20
    assert t["eqt_frac"] > sg2["eqt_frac"] + 20
    assert r["eqr"] > sg2["eqr"] + 20
    assert r["eqr"] > t["eqr"] + 10  # rotation equivariance is what R adds


def test_registered_metrics_and_sample_count():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-r-tiny")
    ctx = MetricContext(G=G, num_gen=4, batch_size=4, progress=False)
    out = {}
    for name in ("eqt50k_int", "eqt50k_frac", "eqr50k"):
        out.update(compute_metric(name, ctx))
    assert set(out) == {"eqt50k_int", "eqt50k_frac", "eqr50k"}
    assert all(math.isfinite(v) and v > 20 for v in out.values()), out
    # deterministic for a given seed; G is not modified
    assert compute_metric("eqr50k", ctx) == {"eqr50k": out["eqr50k"]}
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))
    with pytest.raises(UserInputError, match="choose at least one"):
        EquivarianceConfig(num_samples=1)


def test_cli_prints_db_values(tmp_path):
    import json

    from click.testing import CliRunner

    from styleforge.cli.main import cli

    out = tmp_path / "eq.json"
    args = ["equivariance", "--model", "stylegan3-t-tiny", "--num", "4", "--batch-size", "4"]
    result = CliRunner().invoke(cli, [*args, "--metrics", "eqt_int,eqr", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "EQ-T " in result.output and "EQ-R " in result.output and "dB" in result.output
    saved = json.loads(out.read_text())["results_db"]
    assert set(saved) == {"eqt_int", "eqr"} and saved["eqt_int"] > saved["eqr"]
    bad = CliRunner().invoke(cli, [*args, "--metrics", "eqx"])
    assert bad.exit_code != 0 and "eqx" in bad.output and "Traceback" not in bad.output
    sg2 = CliRunner().invoke(cli, ["equivariance", "--model", "stylegan2-tiny", "--num", "4"])
    assert sg2.exit_code != 0 and "config B" in sg2.output


def test_two_ranks_sharing_the_batches_equal_one_process():
    """Each rank runs every other batch (drawing every batch's latents and transforms); the added error sums give
    the single-process values. The ranks run one after the other (rank 1 first, its sums handed to rank 0)."""
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-r-tiny")
    cfg = EquivarianceConfig(num_samples=10, batch_size=3, eqt_int=True, eqt_frac=True, eqr=True, seed=2)
    one = compute_equivariance(G, cfg)
    sums: dict = {}
    ran = [0, 0]

    for rank in (1, 0):
        def gather(obj, rank=rank):
            sums[rank] = obj
            return [obj, sums[1]] if rank == 0 else [obj, obj]

        def count(name, ref, img, mask, rank=rank):
            ran[rank] += name == "eqt_int"

        out = compute_equivariance(G, cfg, rank=rank, num_ranks=2, gather=gather, on_batch=count)
    assert ran == [2, 2]  # batches of 3, 3, 3, 1: two each
    for key in one:
        assert out[key] == pytest.approx(one[key], rel=1e-9), key

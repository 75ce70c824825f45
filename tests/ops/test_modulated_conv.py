"""Modulated convolutions: definition, fused == non-fused, fp16 pre-normalisation, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from styleforge.ops.filters import setup_filter
from styleforge.ops.modulated_conv import DEMOD_EPS, modulated_conv2d, modulated_conv2d_stylegan3


def _per_sample_definition(x, weight, styles, demodulate, padding):
    """Loop over samples with explicit w' = s * w, w'' = w' / sqrt(sum w'^2 + eps)."""
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + DEMOD_EPS).sqrt()
        outs.append(F.conv2d(x[i : i + 1], w, padding=padding))
    return torch.cat(outs)


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_matches_definition(demodulate, fused, impl):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    y = modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, fused_modconv=fused, impl=impl)
    assert torch.allclose(y, _per_sample_definition(x, weight, styles, demodulate, 1))
    if demodulate:  # unit-variance inputs give roughly unit-variance outputs
        assert 0.5 < float(y.std()) < 2.0


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("noise", [True, False])
def test_fused_non_fused_ref_and_fast_agree(up, down, demodulate, noise):
    torch.manual_seed(1)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(3, 8, 8, 8)
    weight = torch.randn(6, 8, 3, 3)
    styles = torch.randn(3, 8)
    size = 8 * up // down
    n = torch.randn(3, 1, size, size) if noise else None
    kw = dict(noise=n, up=up, down=down, padding=1, resample_filter=f, demodulate=demodulate,
              flip_weight=up == 1)
    a = modulated_conv2d(x, weight, styles, fused_modconv=True, impl="ref", **kw)
    assert a.shape == (3, 6, size, size)
    scale = max(float(a.abs().max()), 1.0)
    for fused, impl in [(False, "ref"), (True, "fast"), (False, "fast")]:
        b = modulated_conv2d(x, weight, styles, fused_modconv=fused, impl=impl, **kw)
        assert (a - b).abs().max() <= 1e-5 * scale


def test_fast_gradients_match_ref():
    torch.manual_seed(5)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    for fused in (True, False):
        outs = [modulated_conv2d(x, weight, styles, down=2, padding=1, resample_filter=f, fused_modconv=fused,
                                 impl=impl) for impl in ("ref", "fast")]
        grad = torch.randn_like(outs[0])
        g_ref = torch.autograd.grad(outs[0], (x, weight, styles), grad)
        g_fast = torch.autograd.grad(outs[1], (x, weight, styles), grad)
        for a, b in zip(g_ref, g_fast, strict=True):
            assert (a - b).abs().max() < 1e-10


def test_fp16_prenormalisation_is_cancelled_by_demodulation():
    torch.manual_seed(2)
    x = torch.randn(2, 8, 8, 8)
    weight = torch.randn(4, 8, 3, 3) * 300.0  # large weights overflow fp16 without the pre-normalisation
    styles = torch.randn(2, 8) * 300.0
    ref = modulated_conv2d(x, weight, styles, padding=1, impl="ref")
    for impl in ("ref", "fast"):
        half = modulated_conv2d(x.half(), weight, styles, padding=1, impl=impl)
        assert half.dtype == torch.float16
        assert torch.isfinite(half).all()
        assert (half.float() - ref).abs().max() < 2e-2


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck(fused, impl):
    torch.manual_seed(3)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, s: modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f, flip_weight=False,
                                          fused_modconv=fused, impl=impl)
    assert gradcheck(fn, (x, weight, styles))
    assert gradgradcheck(fn, (x, weight, styles))


def test_stylegan3_variant():
    torch.manual_seed(4)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 1, 1, dtype=torch.float64)
    styles = torch.randn(2, 4, dtype=torch.float64)
    gain = torch.tensor(0.7, dtype=torch.float64)
    y = modulated_conv2d_stylegan3(x, weight, styles, demodulate=True, padding=0, input_gain=gain)
    # weight/style pre-normalisation is cancelled by demodulation; input_gain scales the result
    expected = _per_sample_definition(x, weight, styles, True, 0) * 0.7
    assert torch.allclose(y, expected, atol=1e-6)
    y = modulated_conv2d_stylegan3(x, weight, styles, demodulate=False)
    assert torch.allclose(y, _per_sample_definition(x, weight, styles, False, 0))

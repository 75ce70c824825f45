"""conv2d_resample equals its definition (upsample -> conv -> downsample) in every evaluation order."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from styleforge.ops._common import parse_padding
from styleforge.ops.conv2d_resample import conv2d_resample
from styleforge.ops.filters import setup_filter
from styleforge.ops.upfirdn2d import upfirdn2d


def _definition(x, w, f, up, down, padding, groups, flip_weight):
    """Zero-stuff + filter (gain up^2), pad, convolve, filter + decimate: the op's meaning."""
    fw = fh = f.shape[-1]
    kh, kw = w.shape[2:]
    x0, x1, y0, y1 = parse_padding(padding)
    if up > 1:
        x0, x1 = x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2
        y0, y1 = y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[x0, x1, y0, y1], gain=up**2, impl="ref")
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    return upfirdn2d(x, f, down=down, impl="ref") if down > 1 else x


CASES = list(itertools.product([1, 3, 4], [(1, 1), (2, 1), (1, 2), (2, 2)], [1, 2], [True, False]))


@pytest.mark.parametrize("k,updown,groups,flip_weight", CASES)
@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_matches_definition(k, updown, groups, flip_weight, impl):
    up, down = updown
    gen = torch.Generator().manual_seed(k * 100 + up * 10 + down)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, generator=gen, dtype=torch.float64)
    for padding in (k // 2, (1, 0, 2, 1)):
        y = conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups,
                            flip_weight=flip_weight, impl=impl)
        expected = _definition(x, w, f, up, down, padding, groups, flip_weight)
        assert y.shape == expected.shape
        assert (y - expected).abs().max() < 1e-10
    if k == 3:
        y = conv2d_resample(x, w, f, up=up, down=down, padding=1, groups=groups, impl=impl)
        assert y.shape[2:] == (8 * up // down, 8 * up // down)


def test_float32_fast_equals_ref_with_gradients():
    torch.manual_seed(0)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    w = (torch.randn(8, 8, 3, 3) / 8).requires_grad_(True)
    for up, down in [(1, 1), (2, 1), (1, 2)]:
        a = conv2d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=up == 1, impl="ref")
        b = conv2d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=up == 1, impl="fast")
        assert (a - b).abs().max() < 1e-5
        grad = torch.randn_like(a)
        ga = torch.autograd.grad(a, (x, w), grad)
        gb = torch.autograd.grad(b, (x, w), grad)
        for u, v in zip(ga, gb, strict=True):
            assert (u - v).abs().max() < 1e-5 * max(float(u.abs().max()), 1.0)


def test_gradcheck():
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for up, down in [(2, 1), (1, 2)]:
        def fn(x, w, up=up, down=down):
            return conv2d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=up == 1)

        assert gradcheck(fn, (x, w))
        assert gradgradcheck(fn, (x, w))


def test_channel_mismatch_is_reported():
    with pytest.raises(ValueError, match="channels"):
        conv2d_resample(torch.randn(1, 3, 4, 4), torch.randn(2, 4, 3, 3), padding=1)

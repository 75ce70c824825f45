"""filtered_lrelu: definition, output size, gradients, fast == ref on StyleGAN3-like settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from styleforge.ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_output_size
from styleforge.ops.filters import kaiser_lowpass
from styleforge.ops.upfirdn2d import CPU_BLOCK_CHANNELS, upfirdn2d


def _sg3_filters(radial: bool):
    fu = kaiser_lowpass(12, 8.0, 8.0, 64.0).double()
    fd = kaiser_lowpass(12, 8.0, 8.0, 64.0, radial=radial).double()
    return fu, fd


def test_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    fu, fd = _sg3_filters(False)
    pad = (11, 10, 11, 10)
    y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=pad, gain=1.3, slope=0.1, clamp=0.5, impl="ref")
    t = upfirdn2d(x + b.reshape(1, -1, 1, 1), fu, up=2, padding=pad, gain=4)
    t = (F.leaky_relu(t, 0.1) * 1.3).clamp(-0.5, 0.5)
    expected = upfirdn2d(t, fd, down=2)
    assert torch.allclose(y, expected)
    assert y.shape[2] == filtered_lrelu_output_size(8, 2, 2, 11, 10, 12, 12) == 8


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_identity_filters_reduce_to_lrelu(impl):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    y = filtered_lrelu(x, impl=impl)
    assert torch.allclose(y, F.leaky_relu(x, 0.2) * math.sqrt(2))
    x_before = x.clone()
    filtered_lrelu(x, padding=(-1, -1, 0, 0), impl=impl)
    assert torch.equal(x, x_before)  # the fast path must not modify its input in place


SETTINGS = [  # (up, down, padding)
    (2, 2, (11, 10, 11, 10)),
    (2, 1, (10, 10, 10, 10)),
    (1, 2, (5, 6, 5, 6)),
    (4, 2, (20, 20, 20, 20)),
    (1, 1, (3, 3, 3, 3)),
]


@pytest.mark.parametrize("radial", [False, True])
@pytest.mark.parametrize("up,down,pad", SETTINGS)
@pytest.mark.parametrize("channels", [4, 16, 2 * CPU_BLOCK_CHANNELS + 3])  # NCHW, channels-last, blocks
def test_fast_matches_ref(radial, up, down, pad, channels):
    torch.manual_seed(1)
    fu = kaiser_lowpass(6 * up, 8.0, 8.0, 32.0 * up).double() if up > 1 else None
    fd = kaiser_lowpass(6 * down, 8.0, 8.0, 32.0 * down, radial=radial).double() if down > 1 else None
    x = torch.randn(2, channels, 10, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    kw = dict(up=up, down=down, padding=pad, gain=math.sqrt(2), slope=0.2, clamp=0.8)
    ref = filtered_lrelu(x, fu, fd, b, impl="ref", **kw)
    fast = filtered_lrelu(x, fu, fd, b, impl="fast", **kw)
    assert ref.shape == fast.shape
    assert (ref - fast).abs().max() < 1e-12
    grad = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (x, b), grad)
    grads_fast = torch.autograd.grad(fast, (x, b), grad)
    for a, c in zip(grads_ref, grads_fast, strict=True):
        assert (a - c).abs().max() < 1e-12
    # no-grad path (in-place fused activation) in float32
    with torch.no_grad():
        a = filtered_lrelu(x.float(), fu.float() if fu is not None else None,
                           fd.float() if fd is not None else None, b.float(), impl="ref", **kw)
        c = filtered_lrelu(x.float(), fu.float() if fu is not None else None,
                           fd.float() if fd is not None else None, b.float(), impl="fast", **kw)
    assert (a - c).abs().max() < 1e-5


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_gradcheck(impl):
    torch.manual_seed(2)
    fu = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64) / 2
    fd = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64) / 6
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=2, impl=impl)
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


def test_bad_arguments():
    with pytest.raises(ValueError, match="integers"):
        filtered_lrelu(torch.randn(1, 1, 4, 4), up=(2, 2))

"""upfirdn2d: impulse response, output sizes, resampling helpers, gradients, fast == ref."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from styleforge.ops.filters import kaiser_atten, kaiser_lowpass, setup_filter
from styleforge.ops.upfirdn2d import (
    CHANNELS_LAST_MIN_CHANNELS,
    CHANNELS_LAST_MIN_TAPS,
    CPU_BLOCK_CHANNELS,
    downsample2d,
    filter2d,
    upfirdn2d,
    upfirdn2d_output_size,
    upsample2d,
)

IMPLS = ["ref", "fast"]


def _filters():
    gen = torch.Generator().manual_seed(1)
    return {
        "binomial2d": setup_filter([1, 3, 3, 1]).double(),
        "random2d": torch.randn(3, 5, generator=gen, dtype=torch.float64),
        "separable": torch.randn(6, generator=gen, dtype=torch.float64),
        "long": torch.randn(CHANNELS_LAST_MIN_TAPS, generator=gen, dtype=torch.float64),
        "none": None,
    }


@pytest.mark.parametrize("impl", IMPLS)
def test_impulse_response_is_the_filter(impl):
    f = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(3, 4)
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1
    y = upfirdn2d(x, f, impl=impl, padding=(3, 0, 2, 0))  # full padding on the leading sides
    # a convolution reproduces the filter at the impulse; flip_filter correlates, i.e. the reversed filter
    assert torch.equal(y[0, 0, 4:7, 4:8], f)
    y = upfirdn2d(x, f, impl=impl, padding=(3, 0, 2, 0), flip_filter=True)
    assert torch.equal(y[0, 0, 4:7, 4:8], f.flip([0, 1]))
    # separable: the outer product of the 1-D taps
    g = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    y = upfirdn2d(x, g, impl=impl, padding=(2, 0, 2, 0), gain=3.0)
    assert torch.allclose(y[0, 0, 4:7, 4:7], 3.0 * torch.outer(g, g))
    assert float(y.sum()) == pytest.approx(3.0 * 64)


@pytest.mark.parametrize("impl", IMPLS)
def test_output_size_formula(impl):
    f = torch.ones(3, 5, dtype=torch.float64)
    x = torch.randn(2, 3, 7, 11, dtype=torch.float64)
    pads = [(0, 0, 0, 0), (2, 1, 3, -1), (-1, 4, 0, 2)]
    for up, down, pad in itertools.product([1, 2, 3], [1, 2, 3], pads):
        y = upfirdn2d(x, f, up=up, down=down, padding=pad, impl=impl)
        assert y.shape[2] == upfirdn2d_output_size(7, up, down, pad[2], pad[3], 3)
        assert y.shape[3] == upfirdn2d_output_size(11, up, down, pad[0], pad[1], 5)
        assert y.shape[3] == (11 * up + pad[0] + pad[1] - 5) // down + 1


@pytest.mark.parametrize("impl", IMPLS)
def test_helpers_preserve_constants_and_sizes(impl):
    x = torch.full([1, 2, 8, 8], 0.75, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    up = upsample2d(x, f, impl=impl)
    assert up.shape == (1, 2, 16, 16)
    # the DC level is preserved away from the borders
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.tensor(0.75, dtype=torch.float64))
    down = downsample2d(x, f, impl=impl)
    assert down.shape == (1, 2, 4, 4)
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.tensor(0.75, dtype=torch.float64))
    filt = filter2d(x, f, impl=impl)
    assert filt.shape == x.shape
    assert torch.allclose(filt[:, :, 2:-2, 2:-2], x[:, :, 2:-2, 2:-2])
    # anisotropic factors
    assert upsample2d(x, f, up=(2, 1), impl=impl).shape == (1, 2, 8, 16)


@pytest.mark.parametrize("impl", IMPLS)
def test_up_then_down_is_identity_for_box_filter(impl):
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    box = torch.ones(2, dtype=torch.float64)  # nearest-neighbour interpolation with up=2
    y = upfirdn2d(x, box, up=2, padding=(0, 1, 0, 1))
    z = upfirdn2d(y, None, down=2, impl=impl)
    assert torch.allclose(z, x)


def test_separable_equals_outer_product():
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    g = torch.randn(4, dtype=torch.float64)
    a = upfirdn2d(x, g, up=2, down=1, padding=2, impl="ref")
    b = upfirdn2d(x, torch.outer(g, g), up=2, down=1, padding=2, impl="ref")
    assert torch.allclose(a, b)


def test_lowpass_removes_high_frequency():
    """A Kaiser low-pass upsampler keeps a slow cosine and removes the mirror image of it."""
    n = 32
    t = torch.arange(n, dtype=torch.float64)
    margin = 8  # periodic extension so that the borders do not matter
    x = torch.cos(2 * torch.pi * 2 * t / n).expand(1, 1, n, n).contiguous()
    x = torch.nn.functional.pad(x, [margin] * 4, mode="circular")
    f = kaiser_lowpass(24, cutoff=8.0, width=6.0, fs=64.0).double()
    y = upsample2d(x, f, up=2, impl="ref")
    period = y[0, 0, 2 * margin, 2 * margin : 2 * margin + 2 * n]  # one period at the doubled rate
    spectrum = torch.fft.rfft(period).abs() / (2 * n)
    ripple = 10 ** (-kaiser_atten(24, 6.0 / 32.0) / 20)  # designed pass/stop-band deviation (about 1.1 %)
    assert float(spectrum[2]) == pytest.approx(0.5, abs=ripple)  # deviation of both axes, times 0.5
    assert float(spectrum[n - 2]) < 0.5 * ripple  # the image of the cosine that zero insertion creates
    assert float(spectrum[n - 2]) < 1e-3


@pytest.mark.parametrize("name", ["binomial2d", "random2d", "separable", "long", "none"])
@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 0, 1)), (2, 1, (2, 1, 1, 2)), (1, 2, (1, 1, 2, 2)),
                                         (2, 2, (3, -1, 2, 0)), ((3, 2), (1, 2), (2, 2, 1, -1))])
@pytest.mark.parametrize("flip_filter", [False, True])
@pytest.mark.parametrize("channels", [3, CHANNELS_LAST_MIN_CHANNELS, 2 * CPU_BLOCK_CHANNELS + 3])
def test_fast_matches_ref_forward_and_backward(name, up, down, pad, flip_filter, channels):
    f = _filters()[name]
    x = torch.randn(2, channels, 7, 8, dtype=torch.float64, requires_grad=True)
    kwargs = dict(up=up, down=down, padding=pad, flip_filter=flip_filter, gain=1.7)
    ref = upfirdn2d(x, f, impl="ref", **kwargs)
    fast = upfirdn2d(x, f, impl="fast", **kwargs)
    with torch.no_grad():  # without autograd the channels-last path runs in blocks of channels
        assert (upfirdn2d(x, f, impl="fast", **kwargs) - ref).abs().max() < 1e-12
    assert ref.shape == fast.shape
    assert (ref - fast).abs().max() < 1e-12
    grad = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    (g_fast,) = torch.autograd.grad(fast, x, grad)
    assert (g_ref - g_fast).abs().max() < 1e-12
    # float32 agreement at the level the networks need
    x32 = x.detach().float()
    f32 = f.float() if f is not None else None
    a = upfirdn2d(x32, f32, impl="ref", **kwargs)
    b = upfirdn2d(x32, f32, impl="fast", **kwargs)
    assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["binomial2d", "separable"])
def test_gradcheck(impl, name):
    f = _filters()[name]
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d(x, f, up=2, down=2, padding=(2, 1, 1, 2), impl=impl)
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def test_channels_last_input_stays_channels_last():
    x = torch.randn(1, 32, 9, 9).contiguous(memory_format=torch.channels_last)
    f = setup_filter(torch.rand(CHANNELS_LAST_MIN_TAPS))
    for impl in IMPLS:
        y = upsample2d(x, f, impl=impl)
        assert torch.allclose(y, upsample2d(x.contiguous(), f, impl="ref"), atol=1e-6)
    assert upsample2d(x, f, impl="fast").is_contiguous(memory_format=torch.channels_last)


def test_bad_inputs():
    x = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="smaller than the filter"):
        upfirdn2d(x, torch.ones(5, 5))
    with pytest.raises(ValueError, match="NCHW"):
        upfirdn2d(torch.randn(3, 3), None)
    with pytest.raises(ValueError, match="impl"):
        upfirdn2d(x, None, impl="cuda")
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, None, padding=(1, 2, 3))

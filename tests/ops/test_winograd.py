"""Winograd F(4x4, 3x3) equals the direct convolution, in values and in gradients of every order, and the fast
paths of the conv ops use it exactly where ``winograd_applies`` says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import styleforge.ops.winograd as wg
from styleforge.ops.conv2d_resample import conv2d_resample
from styleforge.ops.modulated_conv import modulated_conv2d, modulated_conv2d_stylegan3
from styleforge.ops.winograd import winograd_applies, winograd_conv3x3

CASES = [  # (batch, in, out, height, width, (py, px), groups): output sizes that are and are not multiples of 4
    (2, 4, 6, 9, 7, (1, 1), 1),
    (1, 6, 4, 5, 11, (2, 0), 2),
    (3, 2, 2, 4, 4, (0, 2), 1),
    (1, 3, 5, 8, 8, (1, 1), 1),
    (2, 4, 4, 3, 3, (0, 0), 2),  # a single 1x1 output
]


@pytest.mark.parametrize("n,cin,cout,h,w,padding,groups", CASES)
def test_equals_direct_convolution_in_float64(n, cin, cout, h, w, padding, groups):
    torch.manual_seed(0)
    x = torch.randn(n, cin, h, w, dtype=torch.float64)
    k = torch.randn(cout, cin // groups, 3, 3, dtype=torch.float64)
    ours = winograd_conv3x3(x, k, padding, groups)
    ref = F.conv2d(x, k, padding=padding, groups=groups)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-12


@pytest.mark.parametrize("n,cin,cout,h,w,padding,groups", [
    (1, 2, 3, 6, 5, (1, 1), 1),
    (1, 4, 2, 5, 7, (2, 0), 2),
    (2, 1, 2, 4, 4, (0, 2), 1),
])
def test_gradients_of_first_and_second_order(n, cin, cout, h, w, padding, groups):
    torch.manual_seed(1)
    x = torch.randn(n, cin, h, w, dtype=torch.float64, requires_grad=True)
    k = torch.randn(cout, cin // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda a, b: winograd_conv3x3(a, b, padding, groups)  # noqa: E731
    assert gradcheck(fn, (x, k))
    assert gradgradcheck(fn, (x, k))


def test_r1_style_double_backward_matches_direct():
    """The R1 penalty's gradient w.r.t. the weights (grad of |dD/dx|^2) through two stacked convs."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)

    def penalty_grads(conv):
        y = conv(F.leaky_relu(conv(x, w1), 0.2), w2).square().sum()
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (w1, w2))

    ours = penalty_grads(lambda a, b: winograd_conv3x3(a, b, (1, 1)))
    ref = penalty_grads(lambda a, b: F.conv2d(a, b, padding=1))
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_float32_rounding_is_that_of_a_convolution():
    """Against a float64 reference, F(4x4, 3x3) in float32 stays within a few times the direct conv's error."""
    torch.manual_seed(3)
    x = torch.randn(2, 256, 16, 16)
    k = torch.randn(256, 256, 3, 3) / 48
    ref = F.conv2d(x.double(), k.double(), padding=1)
    scale = ref.abs().max().item()
    err_ours = (winograd_conv3x3(x, k, (1, 1)).double() - ref).abs().max().item() / scale
    err_direct = (F.conv2d(x, k, padding=1).double() - ref).abs().max().item() / scale
    assert err_ours < max(10 * err_direct, 1e-6) and err_ours < 3e-5


def test_refuses_what_it_cannot_compute():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd_conv3x3(x, torch.randn(4, 4, 5, 5), (2, 2))
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd_conv3x3(x, torch.randn(4, 4, 3, 3), (-1, 0))
    with pytest.raises(ValueError, match="empty"):
        winograd_conv3x3(torch.randn(1, 4, 1, 8), torch.randn(4, 4, 3, 3), (0, 0))


def test_applies_only_where_it_pays_off():
    x = torch.randn(4, 512, 16, 16)
    w = torch.randn(512, 512, 3, 3)
    assert winograd_applies(x, w, 1, 1)
    assert not winograd_applies(x, w, 2, 1)  # strided
    assert not winograd_applies(x, torch.randn(512, 512, 1, 1), 1, 1)  # 1x1
    assert not winograd_applies(x[:, :64], w[:64, :64], 1, 1)  # few channels
    assert not winograd_applies(x[:, :, :8, :8], w, 1, 1)  # few output positions
    assert not winograd_applies(x.half(), w.half(), 1, 1)  # float16 (CUDA's own kernels pick their algorithm)
    assert not winograd_applies(x, w.reshape(512 * 8, 64, 3, 3)[:512], 1, 8)  # 64 channels per group


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Lower the size thresholds so that tiny float64 convs take the Winograd path; count its calls."""
    calls = []
    real = wg.winograd_conv3x3

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(wg, "MIN_CHANNELS", 1)
    monkeypatch.setattr(wg, "MIN_POSITIONS", 1)
    monkeypatch.setattr(wg, "winograd_conv3x3", counting)
    return calls


@pytest.mark.parametrize("padding,flip_weight", [(1, True), (1, False), ((1, 2, 0, 1), True)])
def test_conv2d_resample_fast_path_uses_it(winograd_everywhere, padding, flip_weight):
    torch.manual_seed(4)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    ref = conv2d_resample(x, w, padding=padding, flip_weight=flip_weight, impl="ref")
    assert not winograd_everywhere
    fast = conv2d_resample(x, w, padding=padding, flip_weight=flip_weight, impl="fast")
    assert len(winograd_everywhere) == 1
    assert torch.allclose(fast, ref, atol=1e-12)
    g_ref, g_fast = (torch.autograd.grad(y.square().sum(), x)[0] for y in (ref, fast))
    assert torch.allclose(g_fast, g_ref, atol=1e-10)


def test_modulated_convs_fast_paths_use_it(winograd_everywhere):
    torch.manual_seed(5)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    gain = torch.rand(4, dtype=torch.float64) + 0.5
    for fused in (True, False):  # StyleGAN2: the grouped (per-sample) conv and the shared one
        ref = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused, impl="ref")
        fast = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused, impl="fast")
        assert torch.allclose(fast, ref, atol=1e-12)
    assert len(winograd_everywhere) == 2
    for fused in (True, False):  # StyleGAN3 (padding 2): the fast path takes the shared-kernel form for both
        ref = modulated_conv2d_stylegan3(x, weight, styles, padding=2, input_gain=gain, fused=fused, impl="ref")
        fast = modulated_conv2d_stylegan3(x, weight, styles, padding=2, input_gain=gain, fused=fused, impl="fast")
        assert torch.allclose(fast, ref, atol=1e-12)
    assert len(winograd_everywhere) == 4
    assert all(shape[0] == 3 for shape in winograd_everywhere[2:])  # batch kept: one shared kernel


@pytest.mark.parametrize("chunk_bytes", [1, 1600])
def test_channel_chunks_give_the_same_values_and_gradients(monkeypatch, chunk_bytes):
    """The transforms run over groups of channels (1, or 2 then 1 of 3 input channels here)."""
    monkeypatch.setattr(wg, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(6)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert (winograd_conv3x3(x, k, (1, 1)) - F.conv2d(x, k, padding=1)).abs().max().item() < 1e-12
    fn = lambda a, b: winograd_conv3x3(a, b, (1, 1))  # noqa: E731
    assert gradcheck(fn, (x, k)) and gradgradcheck(fn, (x, k))

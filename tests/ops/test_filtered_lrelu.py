"""filtered_lrelu: definition, output size, gradients, fast == ref and compile == ref on StyleGAN3-like settings."""

from __future__ import annotations

import math
import shutil
import types

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from styleforge.ops import filtered_lrelu as filtered_lrelu_module
from styleforge.ops._common import check_impl
from styleforge.ops.filtered_lrelu import (
    CompiledFilteredLrelu,
    FilteredLreluCompileError,
    _resolve_impl,
    filtered_lrelu,
    filtered_lrelu_output_size,
)
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
def test_fast_matches_ref(radial, up, down, pad, channels, monkeypatch):
    monkeypatch.setattr(filtered_lrelu_module, "CPU_BLOCK_BYTES", 0)  # blocks of the fewest channels
    assert filtered_lrelu_module._num_blocks(torch.empty(2, channels, 10, 10), up, pad) == max(channels // 16, 1)
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
    grads_ref = torch.autograd.grad(ref, (x, b), grad, retain_graph=True)
    grads_fast = torch.autograd.grad(fast, (x, b), grad, retain_graph=True)
    for a, c in zip(grads_ref, grads_fast, strict=True):
        assert (a - c).abs().max() < 1e-12
    # gradients of gradients (path length through G): the backward is differentiated in the output gradient
    v = grad.clone().requires_grad_(True)
    second_ref = torch.autograd.grad(torch.autograd.grad(ref, x, v, create_graph=True)[0].square().sum(), v)[0]
    second_fast = torch.autograd.grad(torch.autograd.grad(fast, x, v, create_graph=True)[0].square().sum(), v)[0]
    assert (second_ref - second_fast).abs().max() < 1e-12
    # no-grad path (in-place fused activation) in float32
    with torch.no_grad():
        a = filtered_lrelu(
            x.float(),
            fu.float() if fu is not None else None,
            fd.float() if fd is not None else None,
            b.float(),
            impl="ref",
            **kw,
        )
        c = filtered_lrelu(
            x.float(),
            fu.float() if fu is not None else None,
            fd.float() if fd is not None else None,
            b.float(),
            impl="fast",
            **kw,
        )
    assert (a - c).abs().max() < 1e-5


def test_fast_path_reads_nothing_back_from_a_device():
    """Off the CPU the fast path's forward and backward make no host read (which would wait for a GPU): on the meta
    device, which holds no values, any read fails."""
    fu, fd = (f.float().to("meta") for f in _sg3_filters(False))
    x = torch.empty(2, 20, 12, 12, device="meta", requires_grad=True)
    b = torch.empty(20, device="meta", requires_grad=True)
    y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=(11, 10, 11, 10), clamp=256.0, impl="fast")
    dx, db = torch.autograd.grad(y, (x, b), torch.empty_like(y))
    assert y.shape == (2, 20, 12, 12) and dx.shape == x.shape and db.shape == b.shape


@pytest.mark.parametrize("size", [38, 54, 86, 150])  # StyleGAN3-T's layers at 64 px and one at 128 px
def test_cpu_blocks_hold_about_cpu_block_bytes_of_upsampled_activations(size):
    x, pad = torch.empty(2, 512, size, size), (9, 8, 9, 8)
    channels = 512 // filtered_lrelu_module._num_blocks(x, 2, pad)
    block_bytes = channels * 2 * (2 * size + 17) ** 2 * 4
    if size < 80:
        assert filtered_lrelu_module.CPU_BLOCK_BYTES / 2 <= block_bytes <= filtered_lrelu_module.CPU_BLOCK_BYTES * 2
    else:
        assert channels == CPU_BLOCK_CHANNELS  # never fewer


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("clamp", [None, 0.6])
def test_gradcheck(impl, clamp):
    torch.manual_seed(2)
    fu = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64) / 2
    fd = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64) / 6
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=2, clamp=clamp, impl=impl)
    if clamp is not None:  # some activations are clamped, none within gradcheck's step of the clamp
        y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=2, impl=impl)
        assert (y.abs() > clamp).any()
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_backward_slopes_where_the_reference_has_them(dtype):
    """The fast backward keeps a one-byte code per pixel; its gradient equals autograd's over the reference
    exactly, also at 0 (the negative slope) and at exactly +-clamp (not clamped: clamp's gradient is 1 there)."""
    slope, clamp = 0.25, 3.0
    edges = [0.0, clamp, -clamp / slope, 2 * clamp, -2 * clamp / slope, 1.0, -1.0, 1e-30, -1e-30]
    x = torch.tensor(edges, dtype=dtype).reshape(1, 1, 3, 3).repeat(2, 20, 1, 1)  # 20 channels: blocks too
    x[:, 10:] += torch.randn(2, 10, 3, 3, dtype=dtype)  # and values away from the edges
    x.requires_grad_(True)
    grad = torch.randn(2, 20, 3, 3, dtype=dtype)
    kw = dict(gain=1.0, slope=slope, clamp=clamp)
    want, = torch.autograd.grad(filtered_lrelu(x, impl="ref", **kw), x, grad)
    before = x.detach().clone()
    got, = torch.autograd.grad(filtered_lrelu(x, impl="fast", **kw), x, grad)
    assert torch.equal(got, want)
    assert torch.equal(x.detach(), before)  # no filter and no bias: the fast path must still not write into x


def test_bad_arguments():
    with pytest.raises(ValueError, match="integers"):
        filtered_lrelu(torch.randn(1, 1, 4, 4), up=(2, 2))


# ----------------------------------------------------------------------------------------------------------------
# impl="compile": torch.compile of the fast formulation (inductor needs a C++ compiler on CPU)

# float32, forward and gradients, against impl="ref", relative to the largest magnitude (at least 1): a bias
# gradient sums N*H*W terms, and a float32 value near 35 is already rounded to 4e-6.
COMPILE_TOL = 1e-5


def _scaled_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |a - ref| / max(1, max |ref|)``."""
    return ((a - ref).abs().max() / ref.abs().max().clamp(min=1)).item()


HAS_CXX = any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="torch.compile (inductor) on CPU needs a C++ compiler")


def _compile_case(up, down, pad, radial, clamp, seed=3):
    """float32 inputs and filters of a StyleGAN3-like layer with ``up``/``down`` (identity filters at 1)."""
    torch.manual_seed(seed)
    fu = kaiser_lowpass(6 * up, 8.0, 8.0, 32.0 * up) if up > 1 else None
    fd = kaiser_lowpass(6 * down, 8.0, 8.0, 32.0 * down, radial=radial) if down > 1 else None
    x = torch.randn(2, 4, 10, 10, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    kw = dict(up=up, down=down, padding=pad, gain=math.sqrt(2), slope=0.2, clamp=clamp)
    return x, fu, fd, b, kw


def _assert_compile_matches_ref(up, down, pad, radial, clamp):
    x, fu, fd, b, kw = _compile_case(up, down, pad, radial, clamp)
    ref = filtered_lrelu(x, fu, fd, b, impl="ref", **kw)
    out = filtered_lrelu(x, fu, fd, b, impl="compile", **kw)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _scaled_error(out, ref) < COMPILE_TOL
    if clamp is not None:
        assert ref.abs().max() > 0.5 * clamp  # the clamp is exercised, not a no-op
    grad = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (x, b), grad, retain_graph=True)
    grads_out = torch.autograd.grad(out, (x, b), grad)
    for a, c in zip(grads_ref, grads_out, strict=True):
        assert a.abs().max() > 0.1  # a gradient that is not identically zero
        assert _scaled_error(c, a) < COMPILE_TOL
    with torch.no_grad():  # the variant without autograd compiles separately
        again = filtered_lrelu(x, fu, fd, b, impl="compile", **kw)
    assert _scaled_error(again, ref) < COMPILE_TOL


@needs_cxx
def test_compile_matches_ref_up2_down2_radial():
    """The StyleGAN3 layer case: 1-D ``fu``, 2-D radial ``fd``, clamp (one inductor compilation, cold ~20 s)."""
    _assert_compile_matches_ref(2, 2, (11, 10, 11, 10), radial=True, clamp=0.8)


@needs_cxx
def test_compile_matches_ref_no_resampling():
    """up = down = 1 with identity filters and a crop, as in the critically sampled ToRGB-like layers."""
    _assert_compile_matches_ref(1, 1, (-1, -1, 0, 0), radial=False, clamp=0.8)


@pytest.mark.slow
@needs_cxx
@pytest.mark.parametrize("radial", [False, True])
@pytest.mark.parametrize("up,down,pad", SETTINGS)
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_compile_matches_ref_all_settings(radial, up, down, pad, clamp):
    _assert_compile_matches_ref(up, down, pad, radial, clamp)


def test_compiled_variants_cache():
    """One variant per shape/static arguments, built on first use, least recently used dropped (no inductor)."""
    compiled = CompiledFilteredLrelu(backend="eager", max_variants=2)
    assert len(compiled) == 0  # nothing compiled on creation
    x, fu, fd, b, kw = _compile_case(2, 2, (11, 10, 11, 10), radial=False, clamp=None)
    x, b = x.detach(), b.detach()
    args = (2, 2, (11, 10, 11, 10))
    y = compiled(x, fu, fd, b, *args, math.sqrt(2), 0.2, None, False)
    assert len(compiled) == 1
    assert _scaled_error(y, filtered_lrelu(x, fu, fd, b, impl="ref", **kw)) < COMPILE_TOL
    compiled(x, fu, fd, b, *args, math.sqrt(2), 0.2, None, False)
    assert len(compiled) == 1  # same variant reused
    for gain in (1.0, 2.0, 3.0):  # more variants than dynamo's per-code recompile limit would allow is fine too
        compiled(x, fu, fd, b, *args, gain, 0.2, None, False)
    assert len(compiled) == 2
    compiled.clear()
    assert len(compiled) == 0


def test_compile_failure_is_reported():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler for this test")

    compiled = CompiledFilteredLrelu(backend=broken_backend)
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(FilteredLreluCompileError, match=r"impl='fast'") as info:
        compiled(x, None, None, None, 1, 1, (0, 0, 0, 0), 1.0, 0.2, None, False)
    assert "no compiler for this test" in str(info.value)
    assert len(compiled) == 0  # the failed variant is not kept


def test_compile_argument_errors_come_before_compiling():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="one bias per channel"):
        filtered_lrelu(x, b=torch.zeros(2), impl="compile")
    fu = kaiser_lowpass(12, 8.0, 8.0, 64.0)
    with pytest.raises(ValueError, match="too small"):
        filtered_lrelu(x, fu, None, up=2, padding=0, impl="compile")


def test_auto_never_compiles():
    assert _resolve_impl("auto", torch.zeros(1)) == "fast"
    assert _resolve_impl("auto", types.SimpleNamespace(device=torch.device("cuda"))) == "fast"
    assert _resolve_impl("compile", torch.zeros(1)) == "compile"
    assert _resolve_impl("fast", types.SimpleNamespace(device=torch.device("cuda"))) == "fast"
    assert check_impl("compile") == "fast"  # ops without a compiled form run their fast path
    with pytest.raises(ValueError, match="impl must be one of"):
        filtered_lrelu(torch.zeros(1, 1, 2, 2), impl="jit")

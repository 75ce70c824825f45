"""Filtered leaky ReLU: the alias-suppressing nonlinearity of StyleGAN3.

Karras et al. 2021 (StyleGAN3, sec. 3.2): a pointwise nonlinearity creates frequencies above the Nyquist limit
of the current sampling rate ``s``. The layer therefore upsamples by ``up`` with the low-pass filter ``fu``,
applies the leaky ReLU at the higher rate, low-pass filters with ``fd`` and downsamples by ``down``:

    y = down_d( fd * clamp(lrelu(up_u(x + b) * fu, slope) * gain, +-clamp) )

``impl="ref"`` evaluates exactly this with :func:`upfirdn2d` and :func:`bias_act`. ``impl="fast"`` gives the
same values (to float rounding) with polyphase upsampling (transposed convolution), the leaky ReLU and clamp in
place with the gain folded into the downsampling filter, and a downsampling filter evaluated only at the kept
pixels; on CPU it works in channels-last blocks of channels that stay in cache. ``impl="compile"`` hands the
same formulation (without in-place steps) to ``torch.compile``, which fuses bias, activation, gain and clamp
into the resampling kernels; it compiles lazily, once per device type, dtype, input shape and static arguments.

``impl="auto"`` picks ``"fast"`` on every device; ``"compile"`` is opt-in (``impl="compile"`` or
``Network.set_ops_impl("compile")``), typically on a GPU: it is not the default because its first call per shape
takes seconds to compile and it has no double backward. A failed compilation raises
:class:`FilteredLreluCompileError`; nothing falls back silently. Because torch raises at the second backward of
the compiled path, a loss that differentiates a gradient through this op (path-length regularisation) needs
``"fast"``.
"""

from __future__ import annotations

import math
import types
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from styleforge.ops._common import check_impl, filter_size, parse_padding
from styleforge.ops.bias_act import LRELU_SLOPE, bias_act
from styleforge.ops.upfirdn2d import CPU_BLOCK_CHANNELS, upfirdn2d, upfirdn2d_fast_core, use_channels_last
from styleforge.utils.errors import StyleforgeError

__all__ = [
    "filtered_lrelu",
    "filtered_lrelu_output_size",
    "CompiledFilteredLrelu",
    "FilteredLreluCompileError",
    "COMPILE_BACKEND",
    "MAX_COMPILED_VARIANTS",
]

#: ``torch.compile`` backend of ``impl="compile"``
COMPILE_BACKEND = "inductor"
#: compiled variants (device type, dtype, shapes, static arguments) kept before the least recently used is dropped
MAX_COMPILED_VARIANTS = 64


def filtered_lrelu_output_size(
    size: int, up: int, down: int, pad0: int, pad1: int, up_taps: int, down_taps: int
) -> int:
    """Length of one output axis.

    ``(size * up + pad0 + pad1 - (up_taps - 1) - (down_taps - 1) + down - 1) // down``
    """
    return (size * up + pad0 + pad1 - (up_taps - 1) - (down_taps - 1) + (down - 1)) // down


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = LRELU_SLOPE,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Bias, upsample, leaky ReLU, clamp, downsample.

    Args:
        x: input ``[N, C, H, W]``.
        fu: upsampling filter (1-D separable ``[k]``, 2-D ``[kh, kw]`` or ``None``), applied with DC gain
            ``up**2``.
        fd: downsampling filter, same forms as ``fu``.
        b: bias ``[C]`` or ``None``.
        up: integer upsampling factor.
        down: integer downsampling factor.
        padding: ``p``, ``(px, py)`` or ``(x0, x1, y0, y1)``, applied to the upsampled image before ``fu``.
        gain: scale after the leaky ReLU (``sqrt(2)`` by default).
        slope: leaky-ReLU slope for negative inputs.
        clamp: clamp after the gain to ``[-clamp, clamp]``; ``None`` = no clamp.
        flip_filter: ``True`` = correlate instead of convolve (see :func:`upfirdn2d`).
        impl: ``"ref"`` (the specification), ``"fast"``, ``"compile"`` (``torch.compile`` of the fast
            formulation; first use per shape compiles, which takes seconds; no double backward) or ``"auto"``
            (= ``"fast"``).

    Returns:
        ``[N, C, H_out, W_out]`` with ``W_out = (W * up + x0 + x1 - (fu_w - 1) - (fd_w - 1) + down - 1) //
        down`` (likewise for H).
    """
    if not isinstance(up, int) or not isinstance(down, int) or up < 1 or down < 1:
        raise ValueError(f"up and down must be integers >= 1, got up={up}, down={down}")
    if x.ndim != 4:
        raise ValueError(f"x must be an NCHW tensor, got shape {list(x.shape)}")
    pad = parse_padding(padding)
    choice = _resolve_impl(impl, x)
    if choice == "ref":
        return _filtered_lrelu_ref(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter)
    if choice == "compile":
        _check_compile_inputs(x, fu, fd, b, up, pad)
        return _COMPILED(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter)
    return _filtered_lrelu_fast(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter)


def _resolve_impl(impl: str, x: torch.Tensor) -> str:
    """``"ref"``, ``"fast"`` or ``"compile"``; ``"auto"`` means ``"fast"``."""
    check_impl(impl)  # same accepted values and error as every other op
    return "fast" if impl == "auto" else impl


def _output_shape(x, fu, fd, up, down, pad) -> list[int]:
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    n, c, h, w = x.shape
    out_h = filtered_lrelu_output_size(h, up, down, pad[2], pad[3], fu_h, fd_h)
    out_w = filtered_lrelu_output_size(w, up, down, pad[0], pad[1], fu_w, fd_w)
    return [n, c, out_h, out_w]


def _filtered_lrelu_ref(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter) -> torch.Tensor:
    """The specification, built from the simpler ops."""
    shape = _output_shape(x, fu, fd, up, down, pad)
    if b is not None:
        x = bias_act(x, b, impl="ref")
    x = upfirdn2d(x, fu, up=up, padding=pad, gain=up**2, flip_filter=flip_filter, impl="ref")
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp, impl="ref")
    x = upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl="ref")
    if list(x.shape) != shape:
        raise RuntimeError(f"filtered_lrelu: internal shape mismatch {list(x.shape)} != {shape}")
    return x


#: size of the upsampled activations of one block of channels on the CPU path (at least ``CPU_BLOCK_CHANNELS``
#: channels): large enough that the per-block steps are few, small enough to stay in the cache between them.
#: ``python3 benchmarks/ops.py filtered_lrelu`` (2 cores, StyleGAN3-T's 512-channel layers at batch 2): blocks of
#: 16 channels took 2x as long at 38 px and 1.0-1.2x at 54 px; at 86 px 16 channels are already 4 MB
CPU_BLOCK_BYTES = 4 << 20


def _num_blocks(x: torch.Tensor, up: int, pad: tuple[int, int, int, int]) -> int:
    """How many channel blocks the CPU path splits ``x`` into (see ``CPU_BLOCK_BYTES``)."""
    n, c, h, w = x.shape
    per_channel = n * (h * up + pad[2] + pad[3]) * (w * up + pad[0] + pad[1]) * x.element_size()
    block = max(CPU_BLOCK_CHANNELS, CPU_BLOCK_BYTES // max(per_channel, 1))
    return max(c // block, 1)


def _filtered_lrelu_fast(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter) -> torch.Tensor:
    """Same values as the reference; see the module docstring.

    On CPU with many channels the work runs in channels-last blocks of channels (``CPU_BLOCK_BYTES``; every
    step is per channel): the upsampled block then stays in cache through the activation and the downsampling
    filter, which matters more than the arithmetic on a CPU.
    """
    tracked = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    if tracked:
        return _LeanFilteredLrelu.apply(x, b, fu, fd, up, down, pad, gain, slope, clamp, flip_filter)
    to_channels_last = use_channels_last(x, fu, fd)
    args = (fu, fd, up, pad, down, gain, slope, clamp, flip_filter)
    channels = x.shape[1]
    num_blocks = _num_blocks(x, up, pad) if to_channels_last else 1
    if num_blocks <= 1:
        y = _fast_block(x, b, to_channels_last, *args)
        return y.contiguous() if to_channels_last else y
    bounds = [channels * i // num_blocks for i in range(num_blocks + 1)]
    blocks = list(zip(bounds[:-1], bounds[1:], strict=True))
    bias = [b[c0:c1] if b is not None else None for c0, c1 in blocks]
    out = None
    for (c0, c1), bb in zip(blocks, bias, strict=True):
        y = _fast_block(x[:, c0:c1], bb, True, *args)
        if out is None:
            out = y.new_empty([y.shape[0], channels, y.shape[2], y.shape[3]])
        out[:, c0:c1] = y  # the copy into the NCHW result is the layout change back
    return out


def _fast_block(x, b, to_channels_last, fu, fd, up, pad, down, gain, slope, clamp, flip_filter) -> torch.Tensor:
    """The fast path on one block of channels; the result is channels-last when ``to_channels_last``."""
    # In-place steps are allowed only on tensors this function created and autograd does not track.
    fresh = fu is not None or b is not None
    if to_channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d_fast_core(x, fu, (up, up), (1, 1), pad, flip_filter, up**2)
    # lrelu is positively homogeneous, so for gain g > 0:
    #   clamp(g lrelu(x), +-c) = g clamp(lrelu(x), +-c / g)
    # and the factor g moves into the (linear) downsampling filter: one pass less over the largest tensor.
    fold_gain = gain > 0 and fd is not None
    if not fold_gain and gain != 1:
        x = x * gain
    limit = None if clamp is None else (clamp / gain if fold_gain else clamp)
    if fresh and not x.requires_grad:
        channels_last = _is_channels_last(x)
        if not channels_last:
            x = x.contiguous()
        flat = _flat(x, channels_last)  # in place on a 1-D view of x (faster than on the 4-D channels-last x)
        F.leaky_relu_(flat, slope)
        if limit is not None:
            flat.clamp_(-limit, limit)
    else:
        x = F.leaky_relu(x, slope)
        if limit is not None:
            x = x.clamp(-limit, limit)
    return upfirdn2d_fast_core(x, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, gain if fold_gain else 1)


# ----------------------------------------------------------------------------------------------------------------
# The fast path's autograd: keep a 1-byte slope code per upsampled pixel instead of the float activations
#
# The code is int8: sign(u) of the activation's input u (1: slope 1; 0 or -1: the negative slope), minus 4 where
# the clamp cut the activation (its gradient is 0 there). As a float it is a stand-in input for torch's own
# leaky ReLU and hardtanh backward kernels, which then give the exact derivative in two vectorised passes
# (comparisons that make bool masks, and masked writes, are several times slower per element on the CPU).

#: the hardtanh bounds that keep the codes of unclamped pixels (-1, 0, 1) and zero those of clamped ones (<= -3)
_CODE_CLAMP_BOUND = 2.0
_CODE_CLAMP_OFFSET = 4


def _adjoint_padding(size: int, out: int, up: int, down: int, taps: int, pad0: int) -> tuple[int, int]:
    """Padding of the upfirdn2d that computes the adjoint (the input gradient) of one axis of an upfirdn2d.

    The forward maps ``size`` samples to ``out`` with ``up``, ``down``, ``taps`` and leading padding ``pad0``; its
    adjoint is the upfirdn2d with up and down swapped, the filter flipped and this padding.
    """
    return taps - 1 - pad0, size * up - out * down + pad0 - up + 1


def _upfirdn2d_adjoint(g, f, up, down, pad, flip_filter, gain, in_h, in_w) -> torch.Tensor:
    """``d upfirdn2d(x) / dx`` applied to ``g`` (differentiable in ``g``, so second derivatives work)."""
    fw, fh = filter_size(f)
    px = _adjoint_padding(in_w, g.shape[3], up, down, fw, pad[0])
    py = _adjoint_padding(in_h, g.shape[2], up, down, fh, pad[2])
    return upfirdn2d_fast_core(g, f, (down, down), (up, up), (*px, *py), not flip_filter, gain)


def _lean_forward_block(x, b, fu, fd, up, down, pad, gain, slope, clamp, flip_filter):
    """One block of channels: the output, the slope code of every upsampled pixel (int8, see above) and whether
    the clamp cut any of them."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    u = upfirdn2d_fast_core(x, fu, (up, up), (1, 1), pad, flip_filter, up**2)
    fold_gain = gain > 0 and fd is not None
    if not fold_gain and gain != 1:
        u = u * gain
    elif fu is None and b is None:
        u = u.clone()  # without a filter or a bias, u may be a view of the caller's x: the steps below are in place
    limit = None if clamp is None else (clamp / gain if fold_gain else clamp)
    channels_last = _is_channels_last(u)
    if not channels_last:
        u = u.contiguous()
    flat = _flat(u, channels_last)  # the elementwise steps run on a 1-D view of u (several times faster)
    code = torch.sign(flat)
    F.leaky_relu_(flat, slope)
    # On the CPU one pass finds whether the clamp cuts anything (it rarely does) and the clamp's five are skipped if
    # not; a GPU runs them always, since reading the answer would make the host wait for the device.
    clamped = limit is not None and (u.device.type != "cpu" or _clamp_cuts_anything(flat, limit))
    if clamped:
        # |u| - limit > 0 exactly where |u| > limit, which is where clamp's gradient is 0
        code.add_(flat.abs().sub_(limit).sign_().clamp_min_(0), alpha=-_CODE_CLAMP_OFFSET)
        flat.clamp_(-limit, limit)
    y = upfirdn2d_fast_core(u, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, gain if fold_gain else 1)
    return y, _unflat(code.to(torch.int8), u.shape, channels_last), clamped


def _clamp_cuts_anything(flat: torch.Tensor, limit: float) -> bool:
    """Whether ``flat.clamp(-limit, limit)`` changes any value (a CPU tensor: the answer is read on the host)."""
    lo, hi = torch.aminmax(flat)
    return bool(lo < -limit or hi > limit)


def _is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is dense in channels-last order and not in NCHW order (where both hold, they agree)."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _flat(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 1-D view of a dense ``[N, C, H, W]`` tensor in its memory order."""
    return t.permute(0, 2, 3, 1).reshape(-1) if channels_last else t.reshape(-1)


def _unflat(t: torch.Tensor, shape: torch.Size, channels_last: bool) -> torch.Tensor:
    """The ``[N, C, H, W]`` view of a 1-D tensor laid out as :func:`_flat` reads it."""
    n, c, h, w = shape
    return t.view(n, h, w, c).permute(0, 3, 1, 2) if channels_last else t.view(shape)


class _LeanFilteredLrelu(torch.autograd.Function):
    """``filtered_lrelu`` whose backward needs only a one-byte code per upsampled pixel.

    Autograd over the plain fast path keeps up to three float copies of the upsampled activations per layer (the
    leaky ReLU's, the clamp's and the downsampling convolution's inputs) until the backward pass; here the
    gradient is ``up^T (code' * down^T dy)`` with ``code'`` the slope (1, ``slope`` or 0 where clamped), so only
    the code is kept: a quarter of one copy. The backward is written with differentiable ops, so gradients of
    gradients (path length, R1 through G) work; the code is piecewise constant, so its own derivative is zero,
    as that of the leaky ReLU.
    """

    @staticmethod
    def forward(ctx, x, b, fu, fd, up, down, pad, gain, slope, clamp, flip_filter):
        to_channels_last = use_channels_last(x, fu, fd)
        channels = x.shape[1]
        num_blocks = _num_blocks(x, up, pad) if to_channels_last else 1
        bounds = [channels * i // num_blocks for i in range(num_blocks + 1)]
        out, codes, clamped = None, [], []
        for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True):
            xb = x[:, c0:c1]
            if to_channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            y, code, cut = _lean_forward_block(xb, None if b is None else b[c0:c1], fu, fd, up, down, pad, gain,
                                               slope, clamp, flip_filter)
            if num_blocks == 1:
                out = y.contiguous()
            else:
                if out is None:
                    out = y.new_empty([y.shape[0], channels, *y.shape[2:]])
                out[:, c0:c1] = y  # the copy into the NCHW result is the layout change back
            codes.append(code)
            clamped.append(cut)
        ctx.save_for_backward(fu, fd, *codes)
        ctx.args = (up, down, pad, gain, slope, clamped, flip_filter, bounds, to_channels_last, x.shape, b is not None)
        return out

    @staticmethod
    def backward(ctx, dy):
        fu, fd, *codes = ctx.saved_tensors
        up, down, pad, gain, slope, clamped, flip_filter, bounds, to_channels_last, shape, has_bias = ctx.args
        fold_gain = gain > 0 and fd is not None
        dx = None
        for (c0, c1), code, cut in zip(zip(bounds[:-1], bounds[1:], strict=True), codes, clamped, strict=True):
            g = dy[:, c0:c1]
            if to_channels_last:
                g = g.contiguous(memory_format=torch.channels_last)
            g = _upfirdn2d_adjoint(g, fd, 1, down, (0, 0, 0, 0), flip_filter, gain if fold_gain else 1,
                                   code.shape[2], code.shape[3])
            channels_last = _is_channels_last(code)
            g = g.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            stand_in, flat = _flat(code, channels_last).to(g.dtype), _flat(g, channels_last)
            flat = torch.ops.aten.leaky_relu_backward(flat, stand_in, slope, False)  # g where code > 0, else slope g
            if cut:
                flat = torch.ops.aten.hardtanh_backward(flat, stand_in, -_CODE_CLAMP_BOUND, _CODE_CLAMP_BOUND)
            g = _unflat(flat, g.shape, channels_last)
            if not fold_gain and gain != 1:
                g = g * gain
            g = _upfirdn2d_adjoint(g, fu, up, 1, pad, flip_filter, up**2, shape[2], shape[3])
            if len(codes) == 1:
                dx = g.contiguous()
            else:
                if dx is None:
                    dx = g.new_empty(shape)
                dx[:, c0:c1] = g  # differentiable (a copy into a slice), for gradients of gradients
        db = dx.sum(dim=(0, 2, 3)) if has_bias else None
        return dx, db, None, None, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------------
# impl="compile"


class FilteredLreluCompileError(StyleforgeError, RuntimeError):
    """``torch.compile`` could not build or run the compiled ``filtered_lrelu`` (no C++ compiler or Triton, an
    unsupported Python or backend); ``impl="fast"`` gives the same values without compiling."""


def _fused_core(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter, channels_last) -> torch.Tensor:
    """The fast formulation as ``torch.compile`` traces it: no in-place steps, no blocks of channels.

    ``[N, C, H, W]`` -> ``[N, C, H_out, W_out]`` (NCHW). The compiler fuses bias, ``lrelu``, gain and clamp into
    the kernels around the two polyphase resamplings, so the gain is applied where the reference applies it.
    ``channels_last`` (static, from :func:`use_channels_last`: CPU, long filters) runs the filters channels-last.
    """
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d_fast_core(x, fu, (up, up), (1, 1), pad, flip_filter, up**2)
    x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    x = upfirdn2d_fast_core(x, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1)
    return x.contiguous() if channels_last else x


def _check_compile_inputs(x, fu, fd, b, up, pad) -> None:
    """Report argument mistakes before compiling, so that they are not mistaken for compiler failures."""
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"b must have shape [{x.shape[1]}] (one bias per channel), got {list(b.shape)}")
    for f in (fu, fd):
        if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2)):
            raise ValueError("fu and fd must be None or 1-D/2-D tensors (see styleforge.ops.filters.setup_filter)")
    (fu_w, fu_h), (fd_w, fd_h) = filter_size(fu), filter_size(fd)
    mid_w = x.shape[3] * up + pad[0] + pad[1] - (fu_w - 1)  # width after the upsampling filter
    mid_h = x.shape[2] * up + pad[2] + pad[3] - (fu_h - 1)
    if min(mid_w, mid_h) < 1 or mid_w < fd_w or mid_h < fd_h:
        raise ValueError(
            f"filtered_lrelu: the padded, upsampled image ({x.shape[2] * up + pad[2] + pad[3]}x"
            f"{x.shape[3] * up + pad[0] + pad[1]}) is too small for the filters (up {fu_h}x{fu_w}, down "
            f"{fd_h}x{fd_w}); use a larger input or more padding"
        )


#: start of the debugging hints torch appends to compiler errors (left out of our message)
_TORCH_HINT_PREFIXES = ("Set TORCHDYNAMO_VERBOSE", "For even more developer context")
#: longest excerpt of the compiler's message quoted in a FilteredLreluCompileError
MAX_REASON_CHARS = 400


def _filter_key(f: torch.Tensor | None) -> tuple | None:
    return None if f is None else (f.dtype, f.device.type, tuple(f.shape))


class CompiledFilteredLrelu:
    """Lazily compiled ``filtered_lrelu``: one ``torch.compile``-d callable per variant, built on first use.

    A variant is the device type, dtype and shape of ``x`` without its batch size, the kinds of ``fu``/``fd``/``b``
    and the static arguments ``(up, down, padding, gain, slope, clamp, flip_filter)``; shapes are static
    (``dynamic=False``) and the whole op is one graph (``fullgraph=True``). A variant is compiled for the largest
    batch seen so far; a smaller batch (the partial last batch of a metric or a grid) is padded with zeros to that
    size and the padding dropped from the result (the op works on each image alone), so it does not compile
    again. The least recently used variant is dropped beyond ``max_variants``. Nothing is compiled when the
    object is created.

    Call it with parsed arguments (``padding`` as ``(x0, x1, y0, y1)``); :func:`filtered_lrelu` with
    ``impl="compile"`` uses the module's private instance.
    """

    def __init__(self, backend: str | Callable = COMPILE_BACKEND, max_variants: int = MAX_COMPILED_VARIANTS):
        if max_variants < 1:
            raise ValueError(f"max_variants must be >= 1, got {max_variants}")
        self.backend = backend
        self.max_variants = max_variants
        self._variants: OrderedDict[tuple, Callable] = OrderedDict()
        self._built = 0  # variants built so far; numbers their code objects

    def __len__(self) -> int:
        """Number of compiled variants held."""
        return len(self._variants)

    def clear(self) -> None:
        """Drop every compiled variant (the next call compiles again)."""
        self._variants.clear()

    def __call__(self, x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter) -> torch.Tensor:
        """``filtered_lrelu`` of parsed arguments through the compiled variant for them."""
        statics = (
            up,
            down,
            tuple(pad),
            float(gain),
            float(slope),
            None if clamp is None else float(clamp),
            bool(flip_filter),
            use_channels_last(x, fu, fd),
        )
        if torch.compiler.is_compiling():
            # Already inside someone's torch.compile (a compiled network): the outer compilation traces the plain
            # formulation; building a nested compiled callable here would only break its graph.
            return _fused_core(x, fu, fd, b, *statics)
        key = (x.device.type, x.dtype, tuple(x.shape[1:]), _filter_key(fu), _filter_key(fd), b is None, statics)
        n = x.shape[0]
        held = self._variants.get(key)
        if held is None or held[1] < n:
            held = (self._build(key, statics), n)
            self._variants[key] = held
            while len(self._variants) > self.max_variants:
                self._variants.popitem(last=False)
        else:
            self._variants.move_to_end(key)
        fn, batch = held
        if n < batch:  # pad the batch to the compiled size (no new compilation); each image is filtered alone
            x = torch.cat([x, x.new_zeros((batch - n, *x.shape[1:]))])
        from torch._dynamo.exc import TorchDynamoException  # imported here: torch._dynamo is heavy to import

        try:
            out = fn(x, fu, fd, b)
        except TorchDynamoException as e:
            self._variants.pop(key, None)
            raise self._error(x, e) from e
        return out[:n] if n < batch else out

    def _build(self, key: tuple, statics: tuple) -> Callable:
        up, down, pad, gain, slope, clamp, flip_filter, channels_last = statics

        def variant(x, fu, fd, b):
            return _fused_core(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter, channels_last)

        # Dynamo keeps compiled graphs per code object and recompiles one code object only a few times
        # (torch._dynamo.config.recompile_limit), a hard error under fullgraph=True. Every variant therefore gets
        # its own copy of the code object, hence its own cache: one compilation per variant.
        self._built += 1
        code = variant.__code__.replace(co_name=f"filtered_lrelu_variant_{self._built}")
        variant = types.FunctionType(code, variant.__globals__, code.co_name, None, variant.__closure__)
        try:
            return torch.compile(variant, backend=self.backend, fullgraph=True, dynamic=False)
        except RuntimeError as e:  # torch.compile refuses at once on an unsupported Python or backend name
            raise self._error(key, e) from e

    def _error(self, where: torch.Tensor | tuple, cause: Exception) -> FilteredLreluCompileError:
        device, dtype = (where.device, where.dtype) if isinstance(where, torch.Tensor) else where[:2]
        lines = []  # the cause's own lines, without the debugging hints torch appends
        for line in str(cause).splitlines():
            if line.startswith(_TORCH_HINT_PREFIXES):
                break
            if line.strip():
                lines.append(line.strip())
        reason = " ".join(lines)[:MAX_REASON_CHARS] or "(no message)"
        backend = getattr(self.backend, "__name__", self.backend)
        return FilteredLreluCompileError(
            f"filtered_lrelu impl='compile': torch.compile (backend {backend!r}) failed for a {dtype} tensor "
            f"on {device}: {type(cause).__name__}: {reason}. Use impl='fast' (same values, no compilation), "
            "e.g. Network.set_ops_impl('fast')."
        )


#: the compiled variants used by ``filtered_lrelu(..., impl="compile")``
_COMPILED = CompiledFilteredLrelu()

"""Winograd minimal filtering for stride-1 3x3 convolutions on the CPU (used by the fast path of the conv ops).

Lavin & Gray 2016 ("Fast Algorithms for Convolutional Neural Networks") compute an ``m x m`` output tile of a
3x3 correlation from an ``(m + 2) x (m + 2)`` input tile ``d`` as

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* = elementwise, g = the 3x3 kernel)

so that, summed over input channels, the work is ``(m + 2)^2`` matrix products of size ``[O, I] x [I, tiles]``
instead of ``9 m^2`` multiply-adds per tile and channel pair. ``F(4x4, 3x3)``, used here, needs 36 products for
16 outputs: 4x fewer multiplications than the direct convolution. The transforms are exact in real arithmetic; in
float32 the result differs from the direct convolution by rounding only (a few times the direct convolution's
own rounding error, see the tests).

Private to the ops: the fast paths of ``conv2d_resample`` and ``modulated_conv2d_stylegan3`` call
:func:`fast_conv2d`, which runs :func:`winograd_conv3x3` where :func:`winograd_applies` says it pays off. Each of
the linear transforms (kernel, input and output tiles) is a pair of autograd Functions, the map and its adjoint,
each the other's backward, so gradients of any order (R1, path length) run through the same transforms and the
same few large products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["fast_conv2d", "winograd_applies", "winograd_conv3x3"]

# F(4x4, 3x3) with the interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray 2016, sec. 4.2).
_BT = ((4, 0, -5, 0, 1, 0),
       (0, -4, -4, 1, 1, 0),
       (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0),
       (0, 1, -1, 2, -2, 0),
       (0, 1, 1, 4, 4, 0),
       (0, 1, -1, 8, -8, 1))
_M = len(_AT)  # output tile size
_A = len(_BT)  # input tile size (m + 2)

#: smallest channel count (per group, in and out) and number of output positions (batch x height x width, input
#: size) for which the transforms cost less than the products they save; measured on a 2-core AVX2 CPU with
#: ``python3 benchmarks/ops.py winograd`` (below them the direct convolution is as fast or faster)
MIN_CHANNELS = 128
MIN_POSITIONS = 1024


def winograd_applies(x: torch.Tensor, w: torch.Tensor, stride: int, groups: int) -> bool:
    """Whether the fast path should evaluate ``conv2d(x, w, stride, groups)`` with :func:`winograd_conv3x3`."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or w.dtype != x.dtype:
        return False
    if stride != 1 or x.ndim != 4 or w.ndim != 4 or tuple(w.shape[2:]) != (3, 3):
        return False
    in_per_group, out_per_group = w.shape[1], w.shape[0] // groups
    return min(in_per_group, out_per_group) >= MIN_CHANNELS and x.shape[0] * x.shape[2] * x.shape[3] >= MIN_POSITIONS


@dataclass(frozen=True)
class _Geometry:
    """Sizes of one convolution: input ``H x W`` with padding ``(py, px)``, output ``ho x wo`` in ``th x tw``
    tiles of ``_M x _M``."""

    h: int
    w: int
    py: int
    px: int

    @property
    def ho(self) -> int:
        return self.h + 2 * self.py - 2

    @property
    def wo(self) -> int:
        return self.w + 2 * self.px - 2

    @property
    def th(self) -> int:
        return -(-self.ho // _M)

    @property
    def tw(self) -> int:
        return -(-self.wo // _M)


def _tiles(x: torch.Tensor, dim: int, j: int, count: int) -> torch.Tensor:
    """Element ``j`` of each of ``count`` tiles along ``dim`` (tiles start every ``_M`` elements)."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(j, j + _M * (count - 1) + 1, _M)
    return x[tuple(index)]


def _lin(target: torch.Tensor, terms: list, accumulate: bool = False) -> None:
    """``target (+)= sum(coef * tensor for coef, tensor in terms)``, written in place into the target view."""
    if accumulate:
        for coef, source in terms:
            target.add_(source, alpha=coef)
        return
    (c0, s0), rest = terms[0], terms[1:]
    if rest and c0 == 1:
        torch.add(s0, rest[0][1], alpha=rest[0][0], out=target)
        rest = rest[1:]
    elif c0 == 1:
        target.copy_(s0)
    else:
        torch.mul(s0, c0, out=target)
    for coef, source in rest:
        target.add_(source, alpha=coef)


# The 1-D transforms, each a short sequence of in-place passes that reuses common sums (the rows of _BT and _AT
# regrouped); d, g, m are the source views, r, t, y the target views.
def _bt(d: list, r: list) -> None:
    """``r = B^T d``."""
    _lin(r[0], [(4, d[0]), (-5, d[2]), (1, d[4])])
    _lin(r[5], [(4, d[1]), (-5, d[3]), (1, d[5])])
    _lin(r[1], [(1, d[4]), (-4, d[2])])  # r1, r2 = (d4 - 4 d2) +- (d3 - 4 d1)
    _lin(r[2], [(1, d[3]), (-4, d[1])])
    r[1].add_(r[2])
    torch.add(r[1], r[2], alpha=-2, out=r[2])
    _lin(r[3], [(1, d[4]), (-1, d[2])])  # r3, r4 = (d4 - d2) +- 2 (d3 - d1)
    _lin(r[4], [(1, d[3]), (-1, d[1])])
    r[3].add_(r[4], alpha=2)
    torch.add(r[3], r[4], alpha=-4, out=r[4])


def _b(g: list, t: list, accumulate: tuple) -> None:
    """``t (+)= B g``, the adjoint of :func:`_bt`; ``accumulate[j]`` adds into ``t[j]`` instead of writing it."""
    s12, s34 = g[1] + g[2], g[3] + g[4]
    d21, d43 = g[2] - g[1], g[4] - g[3]
    _lin(t[0], [(4, g[0])], accumulate[0])
    _lin(t[1], [(4, d21), (2, d43), (4, g[5])], accumulate[1])
    _lin(t[2], [(-5, g[0]), (-4, s12), (-1, s34)], accumulate[2])
    _lin(t[3], [(-1, d21), (-2, d43), (-5, g[5])], accumulate[3])
    _lin(t[4], [(1, g[0]), (1, s12), (1, s34)], accumulate[4])
    _lin(t[5], [(1, g[5])], accumulate[5])


def _at(m: list, y: list) -> None:
    """``y = A^T m``."""
    _lin(y[0], [(1, m[1]), (1, m[2])])
    _lin(y[2], [(1, m[3]), (1, m[4])])
    _lin(y[1], [(1, m[1]), (-1, m[2])])
    _lin(y[3], [(1, m[3]), (-1, m[4])])
    y[0].add_(y[2])  # (m1 + m2) + (m3 + m4)
    torch.add(y[0], y[2], alpha=3, out=y[2])  # (m1 + m2) + 4 (m3 + m4)
    y[0].add_(m[0])
    y[1].add_(y[3], alpha=2)  # (m1 - m2) + 2 (m3 - m4)
    torch.add(y[1], y[3], alpha=6, out=y[3])  # (m1 - m2) + 8 (m3 - m4)
    y[3].add_(m[5])


def _a(g: list, t: list) -> None:
    """``t = A g``, the adjoint of :func:`_at`."""
    _lin(t[1], [(1, g[0]), (1, g[2])])
    _lin(t[2], [(1, g[1]), (1, g[3])])
    t[1].add_(t[2])  # (g0 + g2) + (g1 + g3)
    torch.add(t[1], t[2], alpha=-2, out=t[2])  # (g0 + g2) - (g1 + g3)
    _lin(t[3], [(1, g[0]), (4, g[2])])
    _lin(t[4], [(2, g[1]), (8, g[3])])
    t[3].add_(t[4])
    torch.add(t[3], t[4], alpha=-2, out=t[4])
    _lin(t[0], [(1, g[0])])
    _lin(t[5], [(1, g[3])])


# Neighbouring tiles overlap by two elements (elements 4 and 5 of a tile are 0 and 1 of the next), so the adjoint
# of the tiling writes elements 0-3 of every tile and then adds 4 and 5.
_SET_THEN_ADD = (False, False, False, False, True, True)


#: the transforms run over groups of channels whose data is about this size, so that their intermediate passes
#: stay in the cache (measured 10-30% faster than whole tensors for 512-channel layers at 32-84 px on a 2-core
#: machine with a 32 MB L3; 2 and 8 MB gave about the same)
CHUNK_BYTES = 4 << 20


def _chunks(channels: int, bytes_per_channel: int) -> list[slice]:
    step = max(1, CHUNK_BYTES // max(bytes_per_channel, 1))
    return [slice(i, min(i + step, channels)) for i in range(0, channels, step)]


def _input_transform(x: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``V = B^T d B`` of every tile, ``[36, C, N, th, tw]``."""
    n, c = x.shape[:2]
    pad = (g.px, _M * g.tw + 2 - g.w - g.px, g.py, _M * g.th + 2 - g.h - g.py)
    wp = _M * g.tw + 2
    v = x.new_empty(_A, _A, c, n, g.th, g.tw)
    chunks = _chunks(c, n * (_M * g.th + 2) * wp * x.element_size())
    rows_buffer = x.new_empty(_A, n, chunks[0].stop, g.th, wp)
    for sl in chunks:
        xp = torch.nn.functional.pad(x[:, sl], pad)
        rows = rows_buffer[:, :, : sl.stop - sl.start]
        _bt([_tiles(xp, 2, j, g.th) for j in range(_A)], list(rows))
        _bt([_tiles(rows, 4, j, g.tw) for j in range(_A)], [v[:, b, sl].transpose(1, 2) for b in range(_A)])
    return v.reshape(_A * _A, c, n, g.th, g.tw)


def _input_transform_adjoint(v: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """Adjoint of :func:`_input_transform`: ``[36, C, N, th, tw]`` -> ``[N, C, H, W]``."""
    c, n = v.shape[1:3]
    v = v.reshape(_A, _A, c, n, g.th, g.tw)
    hp, wp = _M * g.th + 2, _M * g.tw + 2
    x = v.new_empty(n, c, g.h, g.w)
    chunks = _chunks(c, n * hp * wp * v.element_size())
    rows_buffer = v.new_empty(_A, n, chunks[0].stop, g.th, wp)
    xp_buffer = v.new_empty(n, chunks[0].stop, hp, wp)
    for sl in chunks:
        rows, xp = rows_buffer[:, :, : sl.stop - sl.start], xp_buffer[:, : sl.stop - sl.start]
        rows[..., _M * g.tw:] = 0
        _b([v[:, b, sl].transpose(1, 2) for b in range(_A)], [_tiles(rows, 4, j, g.tw) for j in range(_A)],
           _SET_THEN_ADD)
        xp[:, :, _M * g.th:] = 0
        _b(list(rows), [_tiles(xp, 2, j, g.th) for j in range(_A)], _SET_THEN_ADD)
        x[:, sl] = xp[:, :, g.py:g.py + g.h, g.px:g.px + g.w]
    return x


def _output_transform(m: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """``[36, O, N, th, tw]`` -> ``Y = A^T M A`` put in place, ``[N, O, ho, wo]``."""
    o, n = m.shape[1:3]
    m = m.reshape(_A, _A, o, n, g.th, g.tw)
    y = m.new_empty(n, o, g.th, _M, g.tw, _M)
    chunks = _chunks(o, _A * _A * n * g.th * g.tw * m.element_size())
    cols_buffer = m.new_empty(_A, _M, chunks[0].stop, n, g.th, g.tw)
    for sl in chunks:
        cols = cols_buffer[:, :, : sl.stop - sl.start]
        _at([m[:, b, sl] for b in range(_A)], [cols[:, d] for d in range(_M)])
        _at(list(cols), [y[:, sl, :, c].permute(4, 1, 0, 2, 3) for c in range(_M)])
    y = y.reshape(n, o, _M * g.th, _M * g.tw)
    return y if (g.ho, g.wo) == y.shape[2:] else y[:, :, :g.ho, :g.wo].contiguous()


def _output_transform_adjoint(y: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """Adjoint of :func:`_output_transform`: ``[N, O, ho, wo]`` -> ``[36, O, N, th, tw]``."""
    n, o = y.shape[:2]
    full = torch.nn.functional.pad(y, (0, _M * g.tw - g.wo, 0, _M * g.th - g.ho))
    full = full.reshape(n, o, g.th, _M, g.tw, _M)
    m = y.new_empty(_A, _A, o, n, g.th, g.tw)
    chunks = _chunks(o, _A * _A * n * g.th * g.tw * y.element_size())
    cols_buffer = y.new_empty(_A, _M, chunks[0].stop, n, g.th, g.tw)
    for sl in chunks:
        cols = cols_buffer[:, :, : sl.stop - sl.start]
        _a([full[:, sl, :, c].permute(4, 1, 0, 2, 3) for c in range(_M)], list(cols))
        _a([cols[:, d] for d in range(_M)], [m[:, b, sl] for b in range(_A)])
    return m.reshape(_A * _A, o, n, g.th, g.tw)


def _linear_pair(transform, adjoint, name: str) -> tuple[type, type]:
    """Two autograd Functions for a linear map and its adjoint, each the other's backward (so any order works)."""

    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t: torch.Tensor, g: _Geometry) -> torch.Tensor:
            ctx.g = g
            return transform(t, g)

        @staticmethod
        def backward(ctx, grad: torch.Tensor):
            return Adjoint.apply(grad.contiguous(), ctx.g), None

    class Adjoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t: torch.Tensor, g: _Geometry) -> torch.Tensor:
            ctx.g = g
            return adjoint(t, g)

        @staticmethod
        def backward(ctx, grad: torch.Tensor):
            return Forward.apply(grad.contiguous(), ctx.g), None

    Forward.__name__, Adjoint.__name__ = name, name + "Adjoint"
    Forward.__qualname__, Adjoint.__qualname__ = name, name + "Adjoint"
    return Forward, Adjoint


def _kernel_matrix(t: torch.Tensor) -> torch.Tensor:
    """``G (x) G``, ``[36, 9]``: row ``6 a + b`` maps a flattened 3x3 kernel to element ``(a, b)`` of ``G g G^T``."""
    gm = torch.tensor(_G, dtype=torch.float64)
    return torch.kron(gm, gm).to(device=t.device, dtype=t.dtype)


def _kernel_transform(w: torch.Tensor, _: None) -> torch.Tensor:
    """``[O, I, 3, 3]`` -> ``U = G g G^T`` of every kernel, ``[36, O, I]`` (one product that reads ``w`` once)."""
    o, i = w.shape[:2]
    return torch.mm(_kernel_matrix(w), w.reshape(o * i, 9).t()).reshape(_A * _A, o, i)


def _kernel_transform_adjoint(u: torch.Tensor, _: None) -> torch.Tensor:
    """Adjoint of :func:`_kernel_transform`: ``[36, O, I]`` -> ``[O, I, 3, 3]``."""
    o, i = u.shape[1:]
    flat = torch.mm(_kernel_matrix(u).t(), u.reshape(_A * _A, o * i))  # [9, O I]: both operands read in order
    return flat.t().contiguous().reshape(o, i, 3, 3)


_KernelTransform, _ = _linear_pair(_kernel_transform, _kernel_transform_adjoint, "_KernelTransform")
_InputTransform, _ = _linear_pair(_input_transform, _input_transform_adjoint, "_InputTransform")
_OutputTransform, _ = _linear_pair(_output_transform, _output_transform_adjoint, "_OutputTransform")


def winograd_conv3x3(x: torch.Tensor, w: torch.Tensor, padding: tuple[int, int] = (0, 0),
                     groups: int = 1) -> torch.Tensor:
    """``torch.nn.functional.conv2d(x, w, padding=padding, groups=groups)`` for a 3x3 ``w``, by ``F(4x4, 3x3)``.

    Args:
        x: ``[N, C_in, H, W]``.
        w: ``[C_out, C_in / groups, 3, 3]``, same dtype as ``x``.
        padding: ``(py, px)`` zeros on each side (>= 0).
        groups: convolution groups.

    Returns:
        ``[N, C_out, H + 2 py - 2, W + 2 px - 2]``.
    """
    n, c_in, h, wd = x.shape
    c_out, c_group = w.shape[:2]
    py, px = padding
    if w.shape[2:] != (3, 3) or c_in != c_group * groups or py < 0 or px < 0:
        raise ValueError(f"winograd_conv3x3 needs a 3x3 kernel for {c_in} channels in {groups} groups and padding "
                         f">= 0, got w {list(w.shape)}, padding {padding}")
    g = _Geometry(h, wd, py, px)
    if g.ho < 1 or g.wo < 1:
        raise ValueError(f"the output of a {h}x{wd} input with padding {padding} would be empty")
    u = _KernelTransform.apply(w.contiguous(), None).reshape(_A * _A * groups, c_out // groups, c_group)
    v = _InputTransform.apply(x.contiguous(), g)  # [36, C_in, N, th, tw]
    v = v.reshape(_A * _A * groups, c_group, n * g.th * g.tw)
    m = torch.bmm(u, v).reshape(_A * _A, c_out, n, g.th, g.tw)
    return _OutputTransform.apply(m, g)


def fast_conv2d(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int | tuple[int, int] = 0,
                groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, w, stride=stride, padding=padding, groups=groups)``, as :func:`winograd_conv3x3` where
    :func:`winograd_applies` (``padding``: ``p`` or ``(py, px)``, symmetric)."""
    if winograd_applies(x, w, stride, groups):
        pad = (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))
        return winograd_conv3x3(x, w, padding=pad, groups=groups)
    return torch.nn.functional.conv2d(x, w, stride=stride, padding=padding, groups=groups)

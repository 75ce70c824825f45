"""Hand-run speed benchmark of the signal-processing ops: ``impl="ref"`` against ``impl="fast"`` on CPU.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/ops.py ops                 # single ops on StyleGAN2/3 layer shapes
    OMP_NUM_THREADS=1 python benchmarks/ops.py ops --impl compile  # also filtered_lrelu's torch.compile path
    OMP_NUM_THREADS=1 python benchmarks/ops.py generator --model stylegan3-r --resolution 256
    OMP_NUM_THREADS=1 python benchmarks/ops.py generator --model stylegan2 --resolution 256
    python benchmarks/ops.py winograd                               # 3x3 conv: direct against Winograd F(4x4, 3x3)
    python benchmarks/ops.py filtered_lrelu                         # the fast path's CPU channel blocks

Prints the best of ``--repeats`` timings per case and the ratio ref / impl. ``--impl compile`` adds
``impl="compile"`` where an op has a compiled form (``filtered_lrelu``; the other ops run their fast path for it,
so they are not timed twice) and prints its first call, which compiles, separately. Generators are timed with
``G.set_ops_impl(impl)`` on the same weights, batch 1, ``noise_mode="const"``, without gradients. ``winograd``
times a 3x3 convolution forward and forward + backward, ``F.conv2d`` against
:func:`styleforge.ops.winograd.winograd_conv3x3`, inside ``retained_heap`` as training runs it; the thresholds of
``winograd_applies`` come from it. ``filtered_lrelu`` times the fast path on StyleGAN3-T's layers at 64 px
(batch 2, 512 channels), without gradients and forward + backward, with the channel blocks of
``CPU_BLOCK_BYTES`` against blocks of the fewest channels (``CPU_BLOCK_CHANNELS``), inside ``retained_heap``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence

import torch

from styleforge.ops.conv2d_resample import conv2d_resample
from styleforge.ops.filtered_lrelu import filtered_lrelu
from styleforge.ops.filters import kaiser_lowpass, setup_filter
from styleforge.ops.modulated_conv import modulated_conv2d
from styleforge.ops.upfirdn2d import upfirdn2d

SG3_FILTER_SIZE = 6  # taps per input sample of the StyleGAN3 filters
SG3_PADDING_UP2 = (11, 10, 11, 10)  # padding of a StyleGAN3 layer with up = down = 2 (margin 10)
BASE_IMPLS = ("ref", "fast")  # always timed; ref is the baseline of every ratio
EXTRA_IMPLS = ("compile",)  # timed on request (--impl), only where an op has that implementation


def best_time(fn: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    """Best wall time in seconds of ``repeats`` calls, after one warm-up call unless ``warm_up=False``."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def compare(
    name: str, make_call: Callable[[str], Callable[[], object]], repeats: int, impls: Sequence[str] = BASE_IMPLS
) -> dict[str, float]:
    """Time ``make_call(impl)`` for each implementation (``impls[0]`` is the baseline) and print one row.

    The first call of each implementation is the warm-up; for ``"compile"`` it compiles, and its time is printed.
    Returns the best times in seconds by implementation.
    """
    times: dict[str, float] = {}
    row = f"{name:58s}"
    for impl in impls:
        fn = make_call(impl)
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        times[impl] = best_time(fn, repeats, warm_up=False)
        row += f"   {impl} {times[impl] * 1e3:9.1f} ms"
        if impl != impls[0]:
            row += f" (x{times[impls[0]] / times[impl]:5.2f})"
        if impl == "compile":
            row += f" [first call {first:.1f} s]"
    print(row)
    return times


def op_cases(repeats: int, extra_impls: Sequence[str] = ()) -> None:
    """Single ops on realistic layer shapes (batch 1); ``extra_impls`` are timed for filtered_lrelu only."""
    gen = torch.Generator().manual_seed(0)
    fs = 64.0  # sampling rate of the upsampled signal
    fu = kaiser_lowpass(2 * SG3_FILTER_SIZE, 10.0, 8.0, fs)
    fd_radial = kaiser_lowpass(2 * SG3_FILTER_SIZE, 10.0, 8.0, fs, radial=True)
    fd_sep = kaiser_lowpass(2 * SG3_FILTER_SIZE, 10.0, 8.0, fs)
    for channels, size, radial in [(512, 52, True), (512, 84, True), (256, 148, True), (128, 276, False)]:
        x = torch.randn(1, channels, size, size, generator=gen)
        b = torch.randn(channels, generator=gen)
        fd = fd_radial if radial else fd_sep
        kind = "radial" if radial else "separable"

        def call(impl, x=x, b=b, fd=fd):
            return lambda: filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=SG3_PADDING_UP2, clamp=256.0, impl=impl)

        compare(
            f"filtered_lrelu C={channels} {size}px up2/down2 {kind}", call, repeats, BASE_IMPLS + tuple(extra_impls)
        )

    x = torch.randn(1, 256, 84, 84, generator=gen)
    compare(
        "upfirdn2d C=256 84px up2 12-tap separable",
        lambda impl: lambda: upfirdn2d(x, fu, up=2, padding=SG3_PADDING_UP2, gain=4, impl=impl),
        repeats,
    )
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 256, 128, 128, generator=gen)
    compare(
        "upfirdn2d C=256 128px down2 [1,3,3,1]",
        lambda impl: lambda: upfirdn2d(x, f, down=2, padding=1, impl=impl),
        repeats,
    )
    for channels, size in [(512, 32), (256, 64)]:
        x = torch.randn(1, channels, size, size, generator=gen)
        w = torch.randn(channels // 2, channels, 3, 3, generator=gen) / math.sqrt(channels * 9)
        s = torch.randn(1, channels, generator=gen)
        compare(
            f"conv2d_resample C={channels} {size}px 3x3 up2",
            lambda impl, x=x, w=w: lambda: conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False, impl=impl),
            repeats,
        )

        def modconv(impl, x=x, w=w, s=s):
            return lambda: modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f, flip_weight=False, impl=impl)

        compare(f"modulated_conv2d C={channels} {size}px 3x3 up2 fused", modconv, repeats)


def generator_case(model: str, resolution: int, repeats: int, extra_impls: Sequence[str] = ()) -> None:
    """Whole generator forward, ref against fast (and ``extra_impls``) ops, same weights."""
    from styleforge.models.registry import create_model

    torch.manual_seed(0)
    G = create_model(model, net="G", img_resolution=resolution).eval()
    z = torch.randn(1, G.z_dim)
    c = torch.zeros(1, G.c_dim)

    impls = BASE_IMPLS + tuple(extra_impls)

    def call(impl):
        G.set_ops_impl(impl)
        return lambda: G(z, c, noise_mode="const")

    images = {}
    for impl in impls:
        G.set_ops_impl(impl)
        images[impl] = G(z, c, noise_mode="const")
    for impl in impls[1:]:
        err = (images["ref"] - images[impl]).abs().max().item()
        print(f"{model} {resolution}px: max |ref - {impl}| = {err:.2e}")
    compare(f"{model} G forward {resolution}px batch 1", call, repeats, impls)


WINOGRAD_CASES = ((4, 512, 64), (4, 512, 32), (4, 512, 16), (2, 512, 16), (4, 512, 8), (2, 256, 64), (4, 128, 64),
                  (4, 128, 32), (4, 64, 64))  # (batch, channels in = out, size)


def winograd_cases(repeats: int) -> None:
    """Direct 3x3 convolution (padding 1) against Winograd, forward and forward + backward, float32."""
    import torch.nn.functional as F

    from styleforge.ops.winograd import winograd_applies, winograd_conv3x3
    from styleforge.utils.heap import retained_heap

    def step(conv, x, w, backward):
        def run():
            if not backward:
                with torch.no_grad():
                    return conv(x, w)
            y = conv(x, w)
            y.backward(torch.ones_like(y))
        return run

    direct = lambda x, w: F.conv2d(x, w, padding=1)  # noqa: E731
    winograd = lambda x, w: winograd_conv3x3(x, w, padding=(1, 1))  # noqa: E731
    with retained_heap(True), torch.enable_grad():
        for n, c, size in WINOGRAD_CASES:
            x = torch.randn(n, c, size, size, requires_grad=True)
            w = torch.randn(c, c, 3, 3, requires_grad=True)
            times = [best_time(step(conv, x, w, bwd), repeats) for bwd in (False, True) for conv in (direct, winograd)]
            print(f"conv3x3 batch {n} {c} ch {size}px: forward {times[0] * 1e3:7.1f} / {times[1] * 1e3:7.1f} ms "
                  f"({times[0] / times[1]:.2f}x), forward+backward {times[2] * 1e3:7.1f} / {times[3] * 1e3:7.1f} ms "
                  f"({times[2] / times[3]:.2f}x); used by the fast path: {winograd_applies(x, w, 1, 1)}", flush=True)


def filtered_lrelu_block_cases(repeats: int) -> None:
    """The fast filtered_lrelu with ``CPU_BLOCK_BYTES`` blocks against blocks of ``CPU_BLOCK_CHANNELS`` channels."""
    from styleforge.ops import filtered_lrelu as module
    from styleforge.utils.heap import retained_heap

    fu = kaiser_lowpass(2 * SG3_FILTER_SIZE, 8.0, 8.0, 64.0)
    fd = kaiser_lowpass(2 * SG3_FILTER_SIZE, 8.0, 8.0, 64.0)
    default_bytes = module.CPU_BLOCK_BYTES
    kw = dict(up=2, down=2, padding=(9, 8, 9, 8), gain=math.sqrt(2), slope=0.2, clamp=256.0, impl="fast")

    def step(x, b, backward):
        def run():
            if not backward:
                with torch.no_grad():
                    return filtered_lrelu(x, fu, fd, b, **kw)
            y = filtered_lrelu(x, fu, fd, b, **kw)
            y.backward(torch.ones_like(y))
        return run

    with retained_heap(True), torch.enable_grad():
        for size in (38, 54, 86):  # StyleGAN3-T's layer inputs at 64 px
            x = torch.randn(2, 512, size, size, requires_grad=True)
            b = torch.randn(512, requires_grad=True)
            times = {}
            for block_bytes in (0, default_bytes):
                module.CPU_BLOCK_BYTES = block_bytes
                try:
                    times[block_bytes] = [best_time(step(x, b, bwd), repeats) for bwd in (False, True)]
                finally:
                    module.CPU_BLOCK_BYTES = default_bytes
            few, ours = times[0], times[default_bytes]
            print(f"filtered_lrelu batch 2 512 ch {size}px up2 down2, blocks of {module.CPU_BLOCK_CHANNELS} channels / "
                  f"{default_bytes >> 20} MB: no grad {few[0] * 1e3:6.1f} / {ours[0] * 1e3:6.1f} ms "
                  f"({few[0] / ours[0]:.2f}x), forward+backward {few[1] * 1e3:6.1f} / {ours[1] * 1e3:6.1f} ms "
                  f"({few[1] / ours[1]:.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ops", "generator", "winograd", "filtered_lrelu"])
    parser.add_argument("--model", default="stylegan3-r")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--impl",
        action="append",
        default=[],
        choices=EXTRA_IMPLS,
        help="also time this implementation (repeatable); ref and fast are always timed",
    )
    args = parser.parse_args()
    extra = tuple(dict.fromkeys(args.impl))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    with torch.no_grad():
        if args.what == "ops":
            op_cases(args.repeats, extra)
        elif args.what == "winograd":
            winograd_cases(args.repeats)
        elif args.what == "filtered_lrelu":
            filtered_lrelu_block_cases(args.repeats)
        else:
            generator_case(args.model, args.resolution, args.repeats, extra)


if __name__ == "__main__":
    main()

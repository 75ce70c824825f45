"""Generator throughput: images per second of ``G(z, c)`` for a preset or a saved network.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/generator.py --preset stylegan2 --res 256 --batch 1 --threads 1
    python benchmarks/generator.py --network path/to/model_dir --batch 8 --device cuda
    python benchmarks/generator.py --preset stylegan2 --res 256 --profile     # where does the time go?

On CPU the same weights are timed with the reference ops (``G.set_ops_impl("ref")``, the specification) and
the fast ops (``"fast"``), interleaved so that both see the same machine load, and the ratio is printed. Each
timing is the median over ``--repeats`` runs after ``--warmup`` runs. On CPU the process CPU time per image
is printed next to
the wall time: on a shared machine it is the steadier of the two (with one thread it is the time the work
needs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

DEFAULT_SEED = 0


@dataclass
class Timing:
    """Per-batch wall-clock and process CPU times of one configuration, in seconds."""

    wall: list[float]
    cpu: list[float]

    def per_image(self, batch: int) -> tuple[float, float]:
        """Median wall and CPU seconds per image."""
        return statistics.median(self.wall) / batch, statistics.median(self.cpu) / batch


def build_generator(args: argparse.Namespace) -> torch.nn.Module:
    """The generator to time: from ``--network`` or from ``--preset`` (seeded random weights)."""
    if args.network:
        from styleforge.loading import load

        return load(args.network, device=args.device).generator.eval()
    from styleforge.models.registry import create_model

    torch.manual_seed(DEFAULT_SEED)
    overrides = {"img_resolution": args.res} if args.res else {}
    return create_model(args.preset, **overrides).eval().to(args.device)


def make_inputs(G: torch.nn.Module, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded latents ``[batch, z_dim]`` and one-hot labels ``[batch, c_dim]``."""
    gen = torch.Generator().manual_seed(DEFAULT_SEED)
    z = torch.randn([batch, G.z_dim], generator=gen).to(device)
    c = torch.zeros([batch, G.c_dim], device=device)
    if G.c_dim > 0:
        c[:, 0] = 1
    return z, c


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_once(
    G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, device: str, noise_mode: str
) -> tuple[float, float]:
    """One forward pass: ``(wall seconds, process CPU seconds)``."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        G(z, c, noise_mode=noise_mode)
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict[str, Timing]:
    """Time every requested ops implementation on the same weights, interleaved."""
    G = build_generator(args)
    if args.channels_last:
        for m in G.modules():
            if hasattr(m, "cpu_channels_last"):
                m.cpu_channels_last = True
    z, c = make_inputs(G, args.batch, args.device)
    impls = ["ref", "fast"] if args.impl == "both" else [args.impl]
    outputs = {}
    for impl in impls:  # warm-up, and check that the implementations agree
        G.set_ops_impl(impl)
        for _ in range(args.warmup):
            with torch.no_grad():
                outputs[impl] = G(z, c, noise_mode=args.noise_mode)
    if len(outputs) == 2:
        diff = (outputs["ref"] - outputs["fast"]).abs().max().item()
        print(f"max |ref - fast| on the output images: {diff:.3g}")
    timings = {impl: Timing([], []) for impl in impls}
    for _ in range(args.repeats):
        for impl in impls:
            G.set_ops_impl(impl)
            wall, cpu = time_once(G, z, c, args.device, args.noise_mode)
            timings[impl].wall.append(wall)
            timings[impl].cpu.append(cpu)
    if args.profile:
        profile(G, z, c, args)
    return timings


def profile(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, args: argparse.Namespace) -> None:
    """Print the operators that take the most time in one forward pass (fast ops)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    G.set_ops_impl("fast" if args.impl in ("both", "auto") else args.impl)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with torch.no_grad(), torch_profile(activities=activities, record_shapes=True) as prof:
        G(z, c, noise_mode=args.noise_mode)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
    print(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=args.profile_rows, max_name_column_width=30
        )
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default="stylegan2", help="registered preset (default: stylegan2)")
    src.add_argument("--network", help="a saved styleforge directory or an official pickle")
    p.add_argument("--res", type=int, default=256, help="img_resolution override for --preset (0 = preset's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave torch's default)")
    p.add_argument(
        "--impl",
        choices=["both", "ref", "fast", "auto"],
        default=None,
        help="ops implementation(s) to time (default: both on CPU, auto on CUDA)",
    )
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="keep StyleGAN2 synthesis activations in channels_last on CPU",
    )
    p.add_argument("--profile", action="store_true", help="also print a torch.profiler table")
    p.add_argument("--profile-rows", type=int, default=15)
    args = p.parse_args(argv)
    if args.impl is None:
        args.impl = "both" if args.device == "cpu" else "auto"
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    what = args.network or f"{args.preset} @ {args.res or 'preset'} px"
    print(
        f"generator: {what}; batch {args.batch}; device {args.device}; threads {torch.get_num_threads()}; "
        f"repeats {args.repeats} (median)"
    )
    timings = run(args)
    for impl, t in timings.items():
        wall, cpu = t.per_image(args.batch)
        cpu_text = f", CPU time {cpu:.3f} s/img" if args.device == "cpu" else ""
        print(f"{impl:>5}: {wall:.3f} s/img ({1 / wall:.2f} img/s) wall{cpu_text}")
    if len(timings) == 2:
        ref_wall, ref_cpu = timings["ref"].per_image(args.batch)
        fast_wall, fast_cpu = timings["fast"].per_image(args.batch)
        print(f"ref / fast: {ref_wall / fast_wall:.2f}x wall, {ref_cpu / fast_cpu:.2f}x CPU time")


if __name__ == "__main__":
    main()

"""One prepared GPU check: the ``gpu`` tests, generator throughput and training speed, as a README table.

On one CUDA device, in a few minutes::

    python benchmarks/gpu_suite.py                 # everything, markdown table on stdout
    python benchmarks/gpu_suite.py --skip-tests    # only the measurements
    python benchmarks/gpu_suite.py --dry-run       # CPU, tiny networks, 16 px: checks the script itself

1. ``pytest -m gpu tests/gpu tests/models`` (float16 blocks forward/backward, R1 through float16 D blocks, ADA on
   float16, nccl with one process, ``impl="compile"`` against the reference).
2. Generator inference, images per second at batch ``--batch`` (default 32) and 256 px, for StyleGAN2 config F
   and StyleGAN3-T/R: float32 (no float16 blocks, no clamping), float16 (the official mixed precision: the 4
   highest resolutions, conv_clamp 256) and float16 with the compiled filtered nonlinearity (StyleGAN3 only;
   StyleGAN2 has no such op), with the peak memory of each.
3. Training seconds per kimg at batch 32 (float16 as the official recipe, ADA on), measured over the last tick
   of a short run on a generated 256 px zip, with the peak memory.

Every figure is the median of ``--repeats`` timed runs after warm-up, with ``torch.cuda.synchronize`` around
each; the GPU's name heads the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
#: (label, preset, G overrides) of the networks measured; --dry-run uses the -tiny presets.
NETWORKS = (("StyleGAN2 config F", "stylegan2"), ("StyleGAN3-T", "stylegan3-t"), ("StyleGAN3-R", "stylegan3-r"))
#: precision modes: label -> (G overrides, ops impl)
MODES = {"fp32": ({"num_fp16_res": 0, "conv_clamp": None}, "auto"), "fp16": ({}, "auto"),
         "fp16+compile": ({}, "compile")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def run_gpu_tests() -> int:
    """``pytest -m gpu`` on the GPU tests; returns its exit code."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/gpu", "tests/models", "tests/ops"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO)


def time_inference(preset: str, mode: str, res: int, batch: int, repeats: int, device: torch.device) -> dict:
    """Images per second and peak memory of ``G(z)`` (const noise) for one network and precision mode."""
    from styleforge.models.registry import create_model

    overrides, impl = MODES[mode]
    torch.manual_seed(0)
    G = create_model(preset, img_resolution=res, **overrides).eval().to(device)
    G.set_ops_impl(impl)
    z = torch.randn(batch, G.z_dim, device=device)
    c = torch.zeros(batch, G.c_dim, device=device)
    _peak_reset(device)
    with torch.no_grad():
        for _ in range(2):  # warm-up (and compilation)
            G(z, c, noise_mode="const")
        _sync(device)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            G(z, c, noise_mode="const")
            _sync(device)
            times.append(time.perf_counter() - t)
    return {"img_s": batch / statistics.median(times), "peak_gib": _peak_gib(device)}


def make_zip(path: Path, count: int, res: int) -> Path:
    """``count`` random ``res`` px RGB PNGs (smooth blobs) in an uncompressed zip, as the dataset tool writes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(small).resize((res, res), Image.BILINEAR).save(buf, "PNG", compress_level=1)
            zf.writestr(f"{i:05d}.png", buf.getvalue())
    return path


def time_training(cfg_name: str, data: Path, batch: int, minibatches: int, device: torch.device,
                  outdir: Path, ops_impl: str = "auto") -> dict:
    """Seconds per kimg over the last tick (``minibatches`` minibatches) of a three-tick run, and peak memory."""
    from styleforge.training.config import make_train_config
    from styleforge.training.loop import train

    tick = batch * minibatches / 1000
    cfg = make_train_config(cfg_name, str(data), kimg=3 * tick, batch=batch, tick=tick, snap=100, image_snap=100)
    cfg = dataclasses.replace(cfg, grid_size=8, ops_impl=ops_impl)
    _peak_reset(device)
    res = train(cfg, run_dir=outdir / f"{cfg_name}-{ops_impl}", device=str(device), log=lambda m: None,
                progress_bar=False)
    return {"s_kimg": res.stats[-1]["sec_per_kimg"], "peak_gib": _peak_gib(device)}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, -tiny networks at 16 px, 2 images: checks the script")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the gpu tests first")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--minibatches", type=int, default=4, help="minibatches per timed training tick")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    args = ap.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        args.res, args.batch, args.repeats, args.minibatches = 16, 2, 1, 1
        args.modes = [m for m in args.modes if m != "fp16+compile"]  # inductor on CPU takes minutes
        networks = [(label, preset + "-tiny") for label, preset in NETWORKS]
        train_batch = 4
    else:
        if not torch.cuda.is_available():
            print("No CUDA device: run with --dry-run to check the script on a CPU.", file=sys.stderr)
            return 2
        device = torch.device("cuda:0")
        networks = list(NETWORKS)
        train_batch = 32
    failed = 0
    if not args.skip_tests and not args.dry_run:
        failed = run_gpu_tests()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    rows = []
    for label, preset in networks:
        for mode in args.modes:
            if mode == "fp16+compile" and not preset.startswith("stylegan3"):
                continue
            t0 = time.perf_counter()
            r = time_inference(preset, mode, args.res, args.batch, args.repeats, device)
            print(f"  {label} {mode}: {r['img_s']:.1f} img/s ({time.perf_counter() - t0:.0f} s)", flush=True)
            rows.append((label, mode, r))
    train_rows = []
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = make_zip(tmp / "data.zip", max(train_batch * 4, 64), args.res)
            for label, preset in networks:
                t0 = time.perf_counter()
                r = time_training(preset, data, train_batch, args.minibatches, device, tmp)
                print(f"  training {label}: {r['s_kimg']:.1f} s/kimg ({time.perf_counter() - t0:.0f} s)", flush=True)
                train_rows.append((label, r))
    print(f"\n### Performance on {name} (torch {torch.__version__}, {args.res} px)\n")
    print(f"| Network | Precision | G inference img/s (batch {args.batch}) | Peak memory GiB |")
    print("|---|---|---:|---:|")
    for label, mode, r in rows:
        print(f"| {label} | {mode} | {r['img_s']:.1f} | {_fmt(r['peak_gib'], '.2f')} |")
    if train_rows:
        print(f"\n| Network | Training s/kimg (batch {train_batch}, fp16, ADA) | Peak memory GiB |")
        print("|---|---:|---:|")
        for label, r in train_rows:
            print(f"| {label} | {r['s_kimg']:.2f} | {_fmt(r['peak_gib'], '.2f')} |")
    if failed:
        print(f"\nThe gpu tests FAILED (pytest exit code {failed}).")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

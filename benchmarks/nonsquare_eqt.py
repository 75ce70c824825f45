"""EQ-T of a non-square StyleGAN3-T against the square network of the same size (issue 17).

Both networks come from the same preset and seed; the non-square one has ``img_aspect`` set (same
``img_resolution``, so the same layer schedule, filters and channels; only the canvas height differs). Random
initialisation: alias-free layers are equivariant by construction, so EQ-T already measures the implementation
(the canvas, margins, padding and Fourier extent per axis). The "per-axis fraction" row is what EQ-T reads when
the reference shift is taken as a fraction of each side (wrong for a non-square canvas, where one unit is
``img_resolution`` pixels along both axes): it shows that the metric itself must be non-square aware.

    OMP_NUM_THREADS=1 python benchmarks/nonsquare_eqt.py --res 64 --samples 64
    OMP_NUM_THREADS=1 python benchmarks/nonsquare_eqt.py --networks RUN_A/network-snapshot-X RUN_B/... --samples 64

``--networks``: measure trained snapshots instead (e.g. the same config trained on a 4:3 and a square set).
"""

from __future__ import annotations

import argparse
import time

import torch

from styleforge.metrics import equivariance as eq
from styleforge.models.registry import create_model


def measure(G, samples: int) -> dict[str, float]:
    cfg = eq.EquivarianceConfig(num_samples=samples, batch_size=8, eqt_int=True, eqt_frac=True, seed=0)
    return eq.compute_equivariance(G, cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--preset", default="stylegan3-t-tiny")
    ap.add_argument("--networks", nargs="*", default=None, help="Saved generators to measure instead.")
    args = ap.parse_args()
    if args.networks:
        from styleforge.loading import load

        print(f"{'size':>8s} {'EQ-T int dB':>12s} {'EQ-T frac dB':>13s} {'img std':>8s}  network")
        for path in args.networks:
            G = load(path).generator
            with torch.no_grad():
                std = float(G(torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(0))).std())
            res = measure(G, args.samples)
            print(f"{G.img_width}x{G.img_height:<4d} {res['eqt_int']:12.2f} {res['eqt_frac']:13.2f} {std:8.3f}  {path}")
        return
    rows = []
    for aspect in (None, (4, 3), (3, 4), (2, 1)):
        torch.manual_seed(0)
        G = create_model(args.preset, img_resolution=args.res, img_aspect=aspect)
        t0 = time.time()
        res = measure(G, args.samples)
        with torch.no_grad():
            res["std"] = float(G(torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(0))).std())
        rows.append((f"{G.img_width}x{G.img_height}", res, time.time() - t0))
    # the same 4:3 network measured with the per-axis-fraction shift (what a square-only metric would do)
    torch.manual_seed(0)
    G = create_model(args.preset, img_resolution=args.res, img_aspect=(4, 3))
    real_size = eq.image_size
    eq.image_size = lambda net: (net.img_resolution, net.img_resolution)  # pretend square: shifts per side
    try:
        wrong = measure(G, args.samples)
    finally:
        eq.image_size = real_size
    print(f"{args.preset} at img_resolution {args.res}, {args.samples} samples, random init (seed 0)")
    print(f"{'size':>8s} {'EQ-T int dB':>12s} {'EQ-T frac dB':>13s} {'img std':>8s} {'seconds':>8s}")
    for size, res, sec in rows:
        print(f"{size:>8s} {res['eqt_int']:12.2f} {res['eqt_frac']:13.2f} {res['std']:8.3f} {sec:8.1f}")
    print(f"{'4:3 per-axis fraction':>22s} {wrong['eqt_int']:.2f} / {wrong['eqt_frac']:.2f}  (wrong reference shift)")


if __name__ == "__main__":
    main()

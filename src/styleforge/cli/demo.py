"""``styleforge demo``: train a tiny StyleGAN2 on the built-in emoji set for a few minutes and report.

The run uses the ``stylegan2-tiny`` networks at 16 px (the emoji are stored at 32 px and resized while
loading) and the full StyleGAN2 loop: R1, path-length regularisation, style mixing, EMA and ADA. It stops
after ``--minutes`` (10) of training and writes the usual run directory plus ``demo_grid.png`` (64 fixed
seeds of G_ema, enlarged 4x), ``demo_report.json`` and ``demo_report.txt`` (wall time, kimg, sec/kimg).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from styleforge.cli._common import user_errors

__all__ = ["command", "DEMO_KIMG", "DEMO_BATCH", "DEMO_MINUTES", "DEMO_RESOLUTION"]

#: Wall-clock budget of the demo's training in minutes (it stops at the first minibatch past it).
DEMO_MINUTES = 10.0
#: Upper bound of the training length in kimg (reached first only on a fast machine).
DEMO_KIMG = 200.0
#: Resolution the emoji are trained at (16 px learns visibly within minutes on a CPU; 32 is the data's own).
DEMO_RESOLUTION = 16
#: Minibatch of the demo.
DEMO_BATCH = 16
#: Progress line interval in kimg.
DEMO_TICK_KIMG = 2.0
#: The sample grid is written every this many ticks.
DEMO_IMAGE_TICKS = 5
#: Each generated pixel becomes a block of this many pixels in demo_grid.png (easier to look at).
GRID_ZOOM = 4


@click.command("demo")
@click.option("--outdir", default="styleforge-demo", show_default=True, type=click.Path(),
              help="Where the run directory, grid and report go.")
@click.option("--minutes", type=float, default=DEMO_MINUTES, show_default=True, help="Training time budget.")
@click.option("--kimg", type=float, default=DEMO_KIMG, show_default=True, help="At most this many kimg.")
@click.option("--resolution", type=int, default=DEMO_RESOLUTION, show_default=True, help="Training resolution.")
@click.option("--batch", type=int, default=DEMO_BATCH, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@user_errors
def command(outdir: str, minutes: float, kimg: float, resolution: int, batch: int, seed: int, device: str) -> None:
    """Train a tiny StyleGAN2 on emoji for about 10 minutes and write a sample grid and a report."""
    import numpy as np
    import torch
    from PIL import Image

    from styleforge.cli._common import pick_device
    from styleforge.training.config import make_train_config
    from styleforge.training.loop import train
    from styleforge.utils.images import save_png

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = make_train_config("stylegan2-tiny", "emoji", resolution=resolution, kimg=kimg, batch=batch,
                            tick=DEMO_TICK_KIMG, snap=0, image_snap=DEMO_IMAGE_TICKS, seed=seed,
                            outdir=str(out), mirror=True, grid_size=64)
    dev = pick_device(device)
    threads = torch.get_num_threads()
    click.echo(f"styleforge demo: {cfg.cfg} on the built-in emoji set at {resolution} px for {minutes:g} min "
               f"(at most {kimg:g} kimg), batch {batch}, device {dev} ({threads} threads).")
    result = train(cfg, device=dev, time_limit_s=minutes * 60)
    grid = np.asarray(Image.open(sorted(result.run_dir.glob("fakes[0-9]*.png"))[-1]))
    save_png(out / "demo_grid.png", grid.repeat(GRID_ZOOM, axis=0).repeat(GRID_ZOOM, axis=1))
    report = {
        "config": cfg.cfg,
        "resolution": resolution,
        "batch": batch,
        "dataset": "emoji (Noto Color Emoji, 32 px)",
        "kimg": result.cur_nimg / 1000,
        "wall_time_s": round(result.wall_time, 1),
        "sec_per_kimg_last_tick": round(result.sec_per_kimg, 2),
        "sec_per_kimg_overall": round(result.wall_time / max(result.cur_nimg / 1000, 1e-9), 2),
        "device": str(dev),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "run_dir": str(result.run_dir),
        "network": str(result.final_snapshot),
        "grid": str(out / "demo_grid.png"),
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "styleforge demo report",
        f"  trained {report['kimg']:.1f} kimg of {cfg.cfg} in {report['wall_time_s'] / 60:.1f} min "
        f"({report['sec_per_kimg_overall']:.1f} s/kimg overall, {report['sec_per_kimg_last_tick']:.1f} s/kimg "
        f"in the last tick) on {dev} with {threads} threads",
        f"  samples (G_ema, seeds 0-63): {report['grid']}",
        f"  network: {report['network']}  (try: styleforge generate --network <that folder> --seeds 0-15 --grid)",
    ]
    (out / "demo_report.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    click.echo("\n".join(lines))

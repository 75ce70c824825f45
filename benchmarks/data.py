"""The training data path: images per second with 0, 1 and 2 loader workers, and time to the first minibatch.

Generates its own datasets under ``--tmp`` (default ``/tmp/styleforge-data-bench``, reused when present), in the
format ``styleforge dataset`` writes (an uncompressed zip of PNGs at compression level 6):

1. **Throughput**: a 10,000-image 256 px zip (too large for the in-memory copy, so every image is read from the
   zip and decoded), read through the engine's stream (:class:`styleforge.training.data_stream.RealStream`:
   the seeded order, chunks of ``--batch-gpu``, copies to float in [-1, 1]) with 0, 1 and 2 workers; images per
   second after a warm-up. Target on a 2-core machine: >= 300 img/s with 2 workers.
2. **Start-up**: wall time from launching ``styleforge train`` (a fresh process) to the end of its first
   minibatch (the first progress line, with ``--tick`` one minibatch of 4 images of ``--cfg stylegan2-tiny``, so
   that the compute is a small part of it) on 1,000- and 20,000-image 64 px zips,
   first with an empty check cache (every image is checked once, with a progress bar) and then again (verdicts
   cached). Target: under 10 s for 20,000 images.

    python benchmarks/data.py                  # everything (a few minutes, most of it making the datasets)
    python benchmarks/data.py --skip-startup   # only the throughput
    python benchmarks/data.py --quick          # 2,000 / 200 / 2,000 images: checks the script in a minute

Decoding dominates; on a shared machine the figures are lower than on a quiet one (compare the 0-worker rate,
one decoding process, with the others: that ratio is the steadier figure).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

#: Distinct images generated per dataset; the members repeat them under different names (decoding costs the
#: same, generation stays quick).
DISTINCT = 256
#: Minibatch of the start-up runs (``--cfg stylegan2-tiny``): small, so that the figure is the start-up (imports,
#: opening and checking the data, building the networks, the first grids, the loader) and not the compute.
STARTUP_BATCH = 4


def make_zip(path: Path, count: int, res: int) -> Path:
    """``count`` PNGs of ``res`` px (smooth random colour fields, as compressible as photos) in a stored zip."""
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            if len(zf.namelist()) == count:
                return path
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(min(DISTINCT, count)):
        small = rng.integers(0, 256, (max(res // 8, 2), max(res // 8, 2), 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((res, res), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=6)
        blobs.append(buf.getvalue())
    tmp = path.with_suffix(".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"{i // 1000:05d}/img{i:08d}.png", blobs[i % len(blobs)])
    os.replace(tmp, path)
    return path


def throughput(data: Path, workers: int, batch_gpu: int, chunks: int, warmup: int = 3) -> float:
    """Images per second of the engine's real-image stream over ``chunks`` chunks after ``warmup``."""
    from styleforge.data import open_dataset
    from styleforge.training.data_stream import RealStream
    from styleforge.training.engine import DataOrder

    ds = open_dataset(data)
    order = DataOrder(len(ds), seed=0)
    stream = RealStream(ds, order, lambda nimg: (batch_gpu, batch_gpu, 1), 0, 1, torch.device("cpu"), workers)
    try:
        for k in range(warmup):
            stream.get(k * batch_gpu, 0, batch_gpu)
        t = time.perf_counter()
        for k in range(warmup, warmup + chunks):
            stream.get(k * batch_gpu, 0, batch_gpu)
        return chunks * batch_gpu / (time.perf_counter() - t)
    finally:
        stream.close()


def startup(data: Path, cache: Path, outdir: Path, batch: int) -> tuple[float, bool]:
    """Seconds from launching ``styleforge train`` to its first progress line (one minibatch per tick), and
    whether it showed the check's progress bar."""
    env = dict(os.environ, STYLEFORGE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "styleforge.cli.main", "train", "--cfg", "stylegan2-tiny", "--data", str(data),
           "--outdir", str(outdir), "--batch", str(batch), "--kimg", str(batch / 1000),
           "--tick", str(batch / 1000), "--snap", "1", "--aug", "noaug", "--metrics", ""]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    elapsed = None
    for line in proc.stdout:
        if line.startswith("tick 0"):
            elapsed = time.perf_counter() - t
            break
    _, err = proc.communicate()
    if elapsed is None:
        raise RuntimeError(f"styleforge train did not report a tick:\n{err[-2000:]}")
    return elapsed, "checking images" in err


def first_chunk_probe(data: str) -> None:
    """(In a fresh process) seconds to import the data path, open and check ``data``, and read the first chunk of
    32 through the stream with the default workers; printed as one line of JSON."""
    import json

    t0 = time.perf_counter()
    from styleforge.data import open_dataset
    from styleforge.training.data_stream import RealStream, default_workers
    from styleforge.training.engine import DataOrder

    t1 = time.perf_counter()
    ds = open_dataset(data)
    t2 = time.perf_counter()
    workers = default_workers(ds.num_images)
    stream = RealStream(ds, DataOrder(len(ds), 0), lambda n: (32, 32, 1), 0, 1, torch.device("cpu"), workers)
    stream.get(0, 0, 32)
    t3 = time.perf_counter()
    stream.close()
    print(json.dumps({"import": t1 - t0, "open": t2 - t1, "first_chunk": t3 - t2, "workers": workers}))


def data_startup(data: Path, cache: Path) -> dict:
    """:func:`first_chunk_probe` in a fresh process with the check cache ``cache``."""
    import json

    env = dict(os.environ, STYLEFORGE_CACHE=str(cache))
    out = subprocess.run([sys.executable, __file__, "--probe", str(data)], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/styleforge-data-bench"))
    ap.add_argument("--batch-gpu", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=40, help="timed chunks per worker count")
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small datasets (checks the script)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        first_chunk_probe(args.probe)
        return
    args.tmp.mkdir(parents=True, exist_ok=True)
    big, starts = (2000, (200, 2000)) if args.quick else (10_000, (1000, 20_000))
    if args.quick:
        args.chunks = min(args.chunks, 10)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (a busy machine lowers "
          "every figure)", flush=True)
    if not args.skip_throughput:
        t = time.perf_counter()
        data = make_zip(args.tmp / f"thr-{big}-256.zip", big, 256)
        print(f"dataset {data.name}: {data.stat().st_size / 2**20:.0f} MiB ({time.perf_counter() - t:.0f} s)")
        os.environ.setdefault("STYLEFORGE_CACHE", str(args.tmp / "cache-throughput"))
        rates = {w: throughput(data, w, args.batch_gpu, args.chunks) for w in args.workers}
        print(f"\n| data path, {big} images at 256 px, chunks of {args.batch_gpu} | img/s | vs 0 workers |")
        print("|---|---:|---:|")
        for w, r in rates.items():
            print(f"| {w} worker(s) | {r:.0f} | {r / rates[args.workers[0]]:.2f}x |")
    if not args.skip_startup:
        rows = []
        for n in starts:
            data = make_zip(args.tmp / f"start-{n}-64.zip", n, 64)
            cache = args.tmp / f"cache-start-{n}"
            shutil.rmtree(cache, ignore_errors=True)
            probe_cold = data_startup(data, cache)
            probe_warm = data_startup(data, cache)
            shutil.rmtree(cache, ignore_errors=True)
            cold, bar = startup(data, cache, args.tmp / "runs", STARTUP_BATCH)
            warm, _ = startup(data, cache, args.tmp / "runs", STARTUP_BATCH)
            rows.append((n, cold, bar, warm, probe_cold, probe_warm))
        print("\n| 64 px zip | `styleforge train` to the end of minibatch 1: first run (checks) | again "
              "| data path alone: open + first chunk of 32, first run | again |")
        print("|---|---:|---:|---:|---:|")
        for n, cold, bar, warm, pc, pw in rows:
            print(f"| {n} images | {cold:.1f} s{' (progress bar)' if bar else ''} | {warm:.1f} s "
                  f"| {pc['open']:.2f} + {pc['first_chunk']:.2f} s | {pw['open']:.2f} + {pw['first_chunk']:.2f} s "
                  f"({pw['workers']} worker(s)) |")
        shutil.rmtree(args.tmp / "runs", ignore_errors=True)


if __name__ == "__main__":
    main()

"""Training speed and memory: one full iteration (Gmain, Greg, Dmain, Dreg) with styleforge's ops against the same
iteration computed by plain autograd over the reference ops, plus the images/s of the data path.

Each configuration runs in a fresh process so that its peak memory (max RSS) is its own; reference and fast runs
are interleaved and the ratios come from the same run. Run by hand::

    python3 benchmarks/training.py            # StyleGAN2 (path length) batch 4, StyleGAN3-T batch 2, 64 px
    python3 benchmarks/training.py --models stylegan2 --batch 4 --iters 2
    python3 benchmarks/training.py --data-only

The official CPU path runs its reference ops, so "ref" here stands for it: targets (issue 9) are StyleGAN2 >= 1.5x
and StyleGAN3-T >= 4x faster than ref, and StyleGAN3-T at most half of ref's peak memory. Three runs per model:

- ``ref``: the reference ops, the C library's allocator left alone (as the official code runs);
- ``fast``: styleforge's ops (Winograd 3x3 convolutions, fused filters, ...), the allocator left alone;
- ``train``: as ``styleforge train`` runs on the CPU, the fast ops inside ``styleforge.utils.heap.retained_heap``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DEFAULT_MODELS = (("stylegan2", 4), ("stylegan3-t", 2))


def one_iteration_run(model: str, mode: str, batch: int, res: int, iters: int, threads: int) -> dict:
    """Time ``iters`` iterations after one warm-up; returns seconds per iteration and the process's peak RSS."""
    import contextlib

    from styleforge.utils.heap import retained_heap

    impl = "ref" if mode == "ref" else "fast"
    with retained_heap(True) if mode == "train" else contextlib.nullcontext():
        return _time_iterations(model, impl, batch, res, iters, threads) | {"impl": mode}


def _time_iterations(model: str, impl: str, batch: int, res: int, iters: int, threads: int) -> dict:
    import torch

    import styleforge
    from styleforge.training.config import make_train_config
    from styleforge.training.losses import StyleGANLoss
    from styleforge.training.stylegan import make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    G = styleforge.create_model(model, img_resolution=res, num_fp16_res=0).set_ops_impl(impl).train()
    D = styleforge.create_model(model, "D", img_resolution=res, num_fp16_res=0).set_ops_impl(impl).train()
    loss_cfg = make_train_config(model, "x", batch=batch, resolution=res).loss
    loss = StyleGANLoss(G, D, loss_cfg)
    opt_G = make_optimizer(list(G.parameters()), 0.002, (0, 0.99), 1e-8, 4)
    opt_D = make_optimizer(list(D.parameters()), 0.002, (0, 0.99), 1e-8, 16)
    phases = [("Gmain", G, opt_G), ("Dmain", D, opt_D), ("Dreg", D, opt_D)]
    if loss_cfg.pl_weight > 0:
        phases.insert(1, ("Greg", G, opt_G))
    reals = torch.rand(batch, 3, res, res) * 2 - 1
    c = torch.zeros(batch, 0)

    def iteration() -> None:
        for name, net, opt in phases:
            G.requires_grad_(net is G)
            D.requires_grad_(net is D)
            opt.zero_grad(set_to_none=True)
            z = torch.randn(batch, G.z_dim)
            denom = batch // loss_cfg.pl_batch_shrink if name == "Greg" else batch
            loss.accumulate(name, reals, c, z, c, gain=1, denom=denom, cur_nimg=0)
            opt.step()
        loss.finish_phase("Greg")

    iteration()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"model": model, "impl": impl, "batch": batch, "res": res, "sec_per_iter": times[len(times) // 2],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def data_path_rate(images: int, batch: int) -> float:
    """Images/s of the engine's real-image path (seeded order, decode from the in-memory set, stack, to float)."""
    import numpy as np
    import torch

    from styleforge.data import open_dataset
    from styleforge.training.engine import DataOrder

    ds = open_dataset("emoji", xflip=True)
    order = DataOrder(len(ds), 0)
    t0 = time.perf_counter()
    done = 0
    while done < images:
        idx = order.indices(done, batch)
        items = [ds[int(i)] for i in idx]
        _ = torch.from_numpy(np.stack([it[0] for it in items])).to(torch.float32) / 127.5 - 1
        done += batch
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help="model presets (default: stylegan2 stylegan3-t)")
    ap.add_argument("--batch", type=int, default=None, help="batch for every model (default: 4 for SG2, 2 for SG3)")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-only", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_iteration_run(args.one[0], args.one[1], args.batch, args.res, args.iters, args.threads)))
        return
    print(f"data path (emoji, 32 px, batch 32): {data_path_rate(20_000, 32):,.0f} img/s")
    if args.data_only:
        return
    models = [(m, args.batch or dict(DEFAULT_MODELS).get(m, 4)) for m in args.models] if args.models \
        else [(m, args.batch or b) for m, b in DEFAULT_MODELS]
    for model, batch in models:
        results = {}
        for impl in ("ref", "fast", "train"):
            cmd = [sys.executable, __file__, "--one", model, impl, "--batch", str(batch), "--res", str(args.res),
                   "--iters", str(args.iters), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[impl] = json.loads(out)
            r = results[impl]
            print(f"{model:12s} {impl:5s} batch {batch} {args.res}px: {r['sec_per_iter']:7.2f} s/iter, "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
        ref = results["ref"]
        for name in ("fast", "train"):
            r = results[name]
            print(f"{model:12s} {name:5s} speed-up {ref['sec_per_iter'] / r['sec_per_iter']:.2f}x, "
                  f"memory {r['peak_rss_gb'] / ref['peak_rss_gb']:.2f} of ref", flush=True)


if __name__ == "__main__":
    main()

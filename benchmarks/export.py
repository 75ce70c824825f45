"""onnxruntime vs PyTorch on the CPU: milliseconds per image of an exported generator.

Examples::

    python benchmarks/export.py --threads 1                       # StyleGAN2 / StyleGAN3-T / XL stem at 64 px
    python benchmarks/export.py --preset stylegan2 --res 256 --batch 4 --threads 2
    python benchmarks/export.py --network path/to/model_dir --threads 2

For each network the ONNX graph of :func:`styleforge.convert.export.export_generator` (fixed batch) is timed in
onnxruntime against PyTorch on the same weights: ``G(z, c, psi)`` as styleforge runs it (default ops) and the
export wrapper itself (the graph onnxruntime runs: ``ref`` ops, non-fused modulated convolution). Runs are
interleaved so that all three see the same machine load; each figure is the median over ``--repeats`` runs after
``--warmup`` runs. Needs the ``[onnx]`` extra.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

#: presets timed by default, each at --res
DEFAULT_PRESETS = ("stylegan2", "stylegan3-t", "stylegan-xl-stem")


def _build(preset: str | None, network: str | None, res: int) -> torch.nn.Module:
    if network is not None:
        from styleforge.loading import load

        return load(network).generator.eval()
    from styleforge.models.registry import create_model

    overrides = {"img_resolution": res}
    if preset.startswith("stylegan3") or preset.startswith("stylegan-xl"):
        overrides["num_fp16_res"] = 0
    G = create_model(preset, "G", **overrides).eval()
    return G


def _median_ms(times: list[float], batch: int) -> float:
    return 1000 * statistics.median(times) / batch


def bench(G: torch.nn.Module, name: str, batch: int, threads: int, warmup: int, repeats: int) -> dict[str, float]:
    import onnxruntime

    from styleforge.convert.export import ExportableGenerator, ExportOptions, example_inputs, export_generator

    torch.set_num_threads(threads)
    options = ExportOptions(format="onnx", batch_size=batch)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_generator(G, Path(tmp) / "G.onnx", options)
        export_s = time.perf_counter() - t0
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only
        session = onnxruntime.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    wrapper = ExportableGenerator(G, options).eval()
    inputs = example_inputs(wrapper, batch)
    feed = {spec.name: x.numpy() for spec, x in zip(session.get_inputs(), inputs, strict=True)}
    c = wrapper._one_hot(inputs[1]) if wrapper.c_dim else None
    runs = {
        "pytorch": lambda: G(inputs[0], c, truncation_psi=0.7, noise_mode="const"),
        "pytorch_export_graph": lambda: wrapper(*inputs),
        "onnxruntime": lambda: session.run(None, feed),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for key, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                if i >= warmup:
                    times[key].append(time.perf_counter() - t0)
        err = float((torch.from_numpy(session.run(None, feed)[0]) - wrapper(*inputs)).abs().max())
    out = {k: _median_ms(v, batch) for k, v in times.items()}
    print(f"{name:28s} batch {batch} threads {threads}: PyTorch {out['pytorch']:8.1f} ms/img | same graph in "
          f"PyTorch {out['pytorch_export_graph']:8.1f} | onnxruntime {out['onnxruntime']:8.1f} ms/img | "
          f"speed-up vs PyTorch x{out['pytorch'] / out['onnxruntime']:.2f} | export {export_s:.0f} s | "
          f"max abs diff {err:.1e}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", help=f"Preset(s) to time (default: {', '.join(DEFAULT_PRESETS)}).")
    parser.add_argument("--network", default=None, help="A saved network instead of presets.")
    parser.add_argument("--res", type=int, default=64, help="Resolution of the presets.")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if args.network is not None:
        bench(_build(None, args.network, args.res), args.network, args.batch, args.threads, args.warmup,
              args.repeats)
        return
    for preset in args.preset or DEFAULT_PRESETS:
        G = _build(preset, None, args.res)
        bench(G, f"{preset} {args.res} px", args.batch, args.threads, args.warmup, args.repeats)


if __name__ == "__main__":
    main()

"""Projected discriminator speed: forward + backward (to the heads and to the images) per batch.

Times one D step as the training loop runs it: D in training mode, DiffAugment on, logits of a batch of images
that require a gradient, ``logits.sum().backward()``. Configurations: the tiny test config, the EfficientNet-lite0
only D (Projected GAN setting, what runs without ``--deit-weights``) and the official two-backbone D (DeiT-base +
EfficientNet-lite0); random weights (speed does not depend on them). The baseline, timed in the same run, is the
StyleGAN2 discriminator at the same resolution; ratios are printed against it, so figures taken on a busy machine
stay comparable.

Examples::

    OMP_NUM_THREADS=2 python benchmarks/projected_d.py                     # 16 and 32 px, batch 8, CPU
    python benchmarks/projected_d.py --res 16 32 64 --batch 32 --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from styleforge.models.projected_discriminator import ProjectedDConfig, ProjectedDiscriminator, tiny_projected_d_config
from styleforge.models.registry import create_model

CONFIGS = {
    "tiny (tests)": tiny_projected_d_config(),
    "lite0 only": ProjectedDConfig(backbones=("efficientnet_lite0",)),
    "deit_base + lite0 (official)": ProjectedDConfig(),
}


def time_step(D: torch.nn.Module, res: int, batch: int, device: str, repeats: int) -> float:
    """Median seconds of one forward + backward of ``D`` on a ``[batch, 3, res, res]`` batch."""
    img = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    c = torch.zeros(batch, 0, device=device)
    times = []
    for i in range(repeats + 1):
        x = img.clone().requires_grad_(True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = D(x, c)
        out.sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    print(f"device {args.device}, batch {args.batch}, threads {torch.get_num_threads()}, median of {args.repeats}")
    for res in args.res:
        torch.manual_seed(0)
        base = create_model("stylegan2", net="D", img_resolution=res).to(args.device).train()
        t_base = time_step(base, res, args.batch, args.device, args.repeats)
        print(f"{res:4d} px  StyleGAN2 D (baseline)          {t_base * 1e3:9.1f} ms")
        for name in args.configs:
            D = ProjectedDiscriminator(CONFIGS[name], res).to(args.device).train()
            t = time_step(D, res, args.batch, args.device, args.repeats)
            print(f"{res:4d} px  {name:32s} {t * 1e3:9.1f} ms  ({t / t_base:6.1f} x baseline)")


if __name__ == "__main__":
    main()

"""The CUDA-only code paths run on the CPU, so that the first GPU run finds no dtype or device mistake: float16
blocks forced on through a training step (forward, backward, R1's double backward through float16 D blocks, ADA,
path length), and the compiled filtered_lrelu at a partial last batch (no recompilation) in float32 and float16."""

from __future__ import annotations

import collections
import dataclasses
import math

import pytest
import torch

import styleforge.layers.stylegan2_blocks as blocks
from styleforge.ops.filtered_lrelu import CompiledFilteredLrelu, filtered_lrelu
from styleforge.ops.filters import kaiser_lowpass
from styleforge.training.checkpoint import load_training_state
from styleforge.training.loop import train
from tests.training.conftest import tiny_config
from tests.training.test_scale import count_minibatch_host_reads


def test_training_step_with_float16_blocks_forced_on_cpu(toy_data, tmp_path, monkeypatch):
    # block_dtype gives float16 only on CUDA; forced here, the StyleGAN2 blocks at 8 and 16 px of G and D run in
    # float16 through one minibatch in which every phase runs (Gmain, Greg, Dmain with ADA, Dreg: R1's gradient of
    # a gradient through the float16 D blocks), with conv clamping at 256 as the official mixed precision.
    dtypes = collections.Counter()
    original = blocks.block_dtype

    def fp16_everywhere(use_fp16, device, force_fp32=False):
        dtype = torch.float16 if use_fp16 and not force_fp32 else original(use_fp16, device, force_fp32)
        dtypes[dtype] += 1
        return dtype

    monkeypatch.setattr(blocks, "block_dtype", fp16_everywhere)
    cfg = dataclasses.replace(tiny_config(toy_data, ticks=1, tick_images=4), mixed_precision="on")
    counts, _ = count_minibatch_host_reads(monkeypatch)
    res = train(cfg, run_dir=tmp_path / "run", device="cpu", log=lambda m: None)
    assert dtypes[torch.float16] > 0 and sum(counts.values()) == 0
    rec = res.stats[-1]
    for k in ("loss/G", "loss/D", "loss/pl_penalty", "loss/r1_penalty"):
        assert math.isfinite(rec[k]) and rec[k] > 0, k
    state = load_training_state(tmp_path / "run")
    for net in ("G", "D"):
        assert all(torch.isfinite(v).all() for v in state[net].values() if v.is_floating_point())
        assert all(v.dtype != torch.float16 for v in state[net].values())  # weights stay float32


def _counting_backend(counter: list[int]):
    def backend(gm, example_inputs):
        counter[0] += 1
        return gm.forward

    return backend


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_compiled_filtered_lrelu_does_not_recompile_for_a_partial_batch(dtype, tol):
    compiles = [0]
    compiled = CompiledFilteredLrelu(backend=_counting_backend(compiles))
    fu = kaiser_lowpass(12, 8.0, 8.0, 64.0)
    fd = kaiser_lowpass(12, 8.0, 8.0, 64.0, radial=True)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 10).to(dtype)
    b = torch.randn(3).to(dtype)
    args = (2, 2, (11, 10, 11, 10), math.sqrt(2), 0.2, 256.0, False)
    kw = dict(up=2, down=2, padding=(11, 10, 11, 10), gain=math.sqrt(2), slope=0.2, clamp=256.0)
    full = compiled(x, fu, fd, b, *args)
    part = compiled(x[:3], fu, fd, b, *args)  # the last, short batch of a metric
    assert compiles[0] == 1 and part.shape[0] == 3 and part.dtype == dtype
    ref = filtered_lrelu(x[:3].float(), fu, fd, b.float(), impl="ref", **kw)
    scale = ref.abs().max().clamp(min=1)
    assert ((part.float() - ref).abs().max() / scale) < tol
    assert torch.equal(part, full[:3])  # padding the batch does not change the other images
    for n in (4, 3):  # with autograd: one more graph (as torch.compile does), then none for the short batch
        xg = x[:n].clone().requires_grad_(True)
        compiled(xg, fu, fd, b, *args).float().square().sum().backward()
        assert xg.grad is not None and xg.grad.dtype == dtype and torch.isfinite(xg.grad).all()
    assert compiles[0] == 2
    compiled(torch.cat([x, x[:1]]), fu, fd, b, *args)  # a larger batch: compiled for that size
    assert compiles[0] == 3 and len(compiled) == 1

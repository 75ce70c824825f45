"""The CUDA paths on a real GPU (marker ``gpu``; skipped without CUDA): float16 blocks forward and backward, R1's
double backward through float16 D blocks, ADA with float16 D blocks in a training run (no host reads per
minibatch), nccl with one process, the compiled filtered_lrelu against the reference (1e-3 in float16, 1e-5 in
float32), pinned batches from the data stream. ``python benchmarks/gpu_suite.py`` runs these first."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

SMALL = dict(channel_base=2048, channel_max=64, mapping_layers=2)  # config-F layout at a few channels


def _models(name: str, res: int = 64):
    from styleforge.models.registry import create_model

    torch.manual_seed(0)
    G = create_model(name, img_resolution=res, **SMALL).cuda()
    D = create_model(name, "D", img_resolution=res, channel_base=2048, channel_max=64).cuda()
    return G, D


@pytest.mark.parametrize("name", ["stylegan2", "stylegan3-t", "stylegan3-r"])
def test_fp16_blocks_forward_backward_close_to_fp32(name):
    G, D = _models(name)
    z = torch.randn(4, G.z_dim, device="cuda")
    img16 = G(z, None, noise_mode="const")
    img32 = G(z, None, noise_mode="const", force_fp32=True)
    assert img16.dtype == torch.float32 and torch.isfinite(img16).all()
    assert (img16 - img32).abs().max() < 0.05 * img32.abs().max() + 1e-3
    logits = D(img16, None)
    logits.sum().backward()
    grads = [p.grad for p in list(G.parameters()) + list(D.parameters()) if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_r1_double_backward_through_fp16_d_blocks():
    _, D = _models("stylegan2")
    assert any(getattr(m, "use_fp16", False) for m in D.modules())
    x = torch.randn(4, 3, 64, 64, device="cuda", requires_grad=True)
    (grad,) = torch.autograd.grad(D(x, None).sum(), [x], create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()
    assert torch.isfinite(penalty) and penalty > 0
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)


def _toy_folder(root, n=16, res=16):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def test_ada_training_with_fp16_d_blocks_and_no_host_reads(tmp_path, monkeypatch):
    from styleforge.training.loop import train
    from tests.training.conftest import tiny_config
    from tests.training.test_scale import count_minibatch_host_reads

    cfg = tiny_config(_toy_folder(tmp_path / "data"), ticks=1, tick_images=16)  # mixed precision auto: fp16
    counts, _ = count_minibatch_host_reads(monkeypatch)
    res = train(cfg, run_dir=tmp_path / "run", device="cuda", log=lambda m: None)
    assert sum(counts.values()) == 0, dict(counts)
    rec = res.stats[-1]
    assert all(math.isfinite(rec[k]) for k in ("loss/G", "loss/D", "loss/r1_penalty", "loss/pl_penalty"))
    assert rec["augment_p"] != pytest.approx(0.2)  # ADA moved p


def test_batch_gpu_auto_on_the_device(tmp_path):
    """--batch-gpu auto on a real GPU: the probes read torch.cuda's peak, the chosen batch fits the budget it
    printed, and the run trains with it."""
    import dataclasses
    import re

    from styleforge.training.loop import train
    from tests.training.conftest import tiny_config

    lines = []
    cfg = dataclasses.replace(tiny_config(_toy_folder(tmp_path / "data"), ticks=1, batch=16, tick_images=16),
                              batch_gpu="auto")
    res = train(cfg, run_dir=tmp_path / "run", device="cuda", log=lines.append)
    (line,) = [m for m in lines if m.startswith("--batch-gpu auto:")]
    assert "GiB free" in line and "exceeds" not in line, line
    chosen = int(re.match(r"--batch-gpu auto: (\d+) images", line).group(1))
    assert chosen == 16, line  # a tiny network at batch 16 fits any GPU
    assert math.isfinite(res.stats[-1]["loss/G"])


def test_nccl_with_one_process():
    import torch.distributed as dist

    from styleforge.training.distributed import DistContext

    if not dist.is_nccl_available():
        pytest.skip("this torch has no nccl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        ctx = DistContext(rank=0, world_size=1, device=torch.device("cuda:0"))
        t = torch.arange(4.0, device="cuda")
        dist.all_reduce(t)
        assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
        out = [None]
        dist.all_gather_object(out, {"rank": 0})
        assert out == [{"rank": 0}] and ctx.all_reduce(t).device.type == "cuda"
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_compile_matches_ref_on_cuda(dtype, tol):
    from styleforge.ops.filtered_lrelu import _COMPILED, filtered_lrelu
    from styleforge.ops.filters import kaiser_lowpass

    torch.manual_seed(0)
    fu = kaiser_lowpass(12, 8.0, 8.0, 64.0).cuda()
    fd = kaiser_lowpass(12, 8.0, 8.0, 64.0, radial=True).cuda()
    x = torch.randn(8, 16, 36, 36, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(16, device="cuda", dtype=dtype, requires_grad=True)
    kw = dict(up=2, down=2, padding=(11, 10, 11, 10), gain=math.sqrt(2), slope=0.2, clamp=256.0)
    ref = filtered_lrelu(x, fu, fd, b, impl="ref", **kw)
    out = filtered_lrelu(x, fu, fd, b, impl="compile", **kw)
    scale = ref.float().abs().max().clamp(min=1)
    assert ((out.float() - ref.float()).abs().max() / scale) < tol
    g = torch.randn_like(ref)
    for a, c in zip(torch.autograd.grad(ref, (x, b), g), torch.autograd.grad(out, (x, b), g), strict=True):
        assert ((a.float() - c.float()).abs().max() / a.float().abs().max().clamp(min=1)) < tol * 10
    held = len(_COMPILED)
    part = filtered_lrelu(x[:5], fu, fd, b, impl="compile", **kw)  # a partial batch: no new variant
    assert len(_COMPILED) == held and torch.allclose(part.float(), out[:5].float(), atol=tol)


def test_data_stream_pins_and_copies_to_the_gpu():
    from styleforge.training.data_stream import RealStream
    from styleforge.training.engine import DataOrder

    class Items:
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return np.full((3, 4, 4), i, dtype=np.uint8), np.array([i], dtype=np.float32)

    order = DataOrder(40, seed=1)
    stream = RealStream(Items(), order, lambda n: (8, 4, 2), 0, 1, torch.device("cuda"), workers=2)
    try:
        img, c = stream.get(0, 1, 4)
        assert img.device.type == "cuda" and img.dtype == torch.float32
        assert c[:, 0].cpu().long().tolist() == order.indices(4, 4).tolist()
    finally:
        stream.close()


def test_precision_policy_inside_a_cuda_run(tmp_path, monkeypatch):
    from styleforge.training import engine as engine_mod
    from styleforge.training.loop import train
    from tests.training.conftest import tiny_config

    seen = []
    run_minibatch = engine_mod._Engine.minibatch

    def spy(self):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                     torch.backends.cudnn.benchmark))
        run_minibatch(self)

    monkeypatch.setattr(engine_mod._Engine, "minibatch", spy)
    cfg = tiny_config(_toy_folder(tmp_path / "data"), ticks=1, tick_images=4)
    train(cfg, run_dir=tmp_path / "run", device=os.environ.get("STYLEFORGE_GPU", "cuda:0"), log=lambda m: None)
    assert seen and seen[0] == (False, False, True)

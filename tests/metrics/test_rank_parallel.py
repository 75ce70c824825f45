"""Metrics computed by several processes, each on its share of the real and generated images, equal the
single-process values (2 gloo processes on CPU). A tiny convolutional feature network made here stands in for
Inception, so the test needs no weights and runs in seconds."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

NUM_REAL = 11  # with batch 3: 4 batches, the last one short, split unevenly over 2 processes
NUM_GEN = 10
BATCH = 3
METRICS = ("fid1k_full", "kid5k_full")  # num_gen overrides the counts


class _TinyFeatures(torch.nn.Module):
    """uint8 images -> 16 features per image (a fixed random conv and pooling)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.2)
            self.conv.bias.zero_()

    def features(self, images, heads):
        x = self.conv(images.float() / 127.5 - 1).tanh().mean(dim=(2, 3))
        return {h: x for h in heads}


class _TinyG(torch.nn.Module):
    """A deterministic 'generator': z -> 16x16 RGB images through a fixed linear map."""

    z_dim, c_dim = 8, 0

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 3 * 16 * 16)
        torch.nn.init.normal_(self.lin.weight, generator=torch.Generator().manual_seed(1))
        torch.nn.init.zeros_(self.lin.bias)  # (the default init would draw from each process's own generator)

    def forward(self, z, c, truncation_psi=1.0, noise_mode="random"):
        return self.lin(z).tanh().view(-1, 3, 16, 16)


def _metrics(data_dir: str, rank: int = 0, world: int = 1, gather=None) -> dict[str, float]:
    from styleforge.data import open_dataset
    from styleforge.metrics import _features as fx
    from styleforge.metrics.registry import MetricContext, compute_metric

    net = fx.FeatureNet(_TinyFeatures(), "inception", "made in the test", "0" * 64, {"resize": "none"})
    fx.get_inception = lambda ctx, random_init=False: net  # this process only (a test's own copy of the module)
    ds = open_dataset(data_dir, check_cache=False)
    out = {}
    for name in METRICS:
        ctx = MetricContext(G=_TinyG(), dataset=ds, batch_size=BATCH, num_gen=NUM_GEN, cache=False, progress=False,
                            rank=rank, num_ranks=world, gather=gather)
        out.update(compute_metric(name, ctx))
    return out


def _worker(rank: int, world: int, port: int, data_dir: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        def gather(obj):
            got = [None] * world
            dist.all_gather_object(got, obj)
            return got

        res = _metrics(data_dir, rank, world, gather)
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_single_process_values(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(NUM_REAL):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    import styleforge.metrics._features as fx

    saved = fx.get_inception
    try:
        one = _metrics(str(tmp_path))
    finally:
        fx.get_inception = saved
    out = tmp_path / "two.json"
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), str(out)), nprocs=2, join=True,
                       start_method="spawn")
    two = json.loads(out.read_text())
    assert set(one) == set(two) == set(METRICS)
    assert one["fid1k_full"] > 0
    for k in METRICS:
        assert two[k] == pytest.approx(one[k], rel=1e-9, abs=1e-12), k


def test_merge_ranks_restores_batch_order():
    from styleforge.metrics.feature_stats import FeatureStats

    batches = [np.full((3 if j < 4 else 1, 2), j, dtype=np.float32) for j in range(5)]
    single = FeatureStats(capture_all=True, capture_mean_cov=True)
    parts = [FeatureStats(capture_all=True, capture_mean_cov=True) for _ in range(2)]
    for j, b in enumerate(batches):
        single.append(b)
        parts[j % 2].append(b)
    merged = FeatureStats.merge_ranks(parts)
    assert merged.num_items == single.num_items == 13
    assert np.array_equal(merged.get_all(), single.get_all())
    for a, b in zip(merged.get_mean_cov(), single.get_mean_cov(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="gather"):
        from styleforge.metrics.registry import MetricContext

        MetricContext(num_ranks=2)
    assert torch.is_tensor(torch.zeros(1))

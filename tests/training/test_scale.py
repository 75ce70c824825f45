"""Training at scale: no host synchronisation per minibatch, the worker-based data stream, the CUDA settings."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys

import numpy as np
import pytest
import torch

from styleforge.training import engine as engine_mod
from styleforge.training.checkpoint import load_training_state
from styleforge.training.data_stream import RealStream, default_workers
from styleforge.training.distributed import DistContext
from styleforge.training.loop import train
from tests.training.conftest import tiny_config

#: Tensor methods that make the host wait for the device (on CUDA) when called.
SYNCING_METHODS = ("item", "cpu", "tolist", "__float__", "__bool__", "__int__")


#: Callers whose reads are of tensors that live on the host on every device: Adam's step counters (CPU tensors
#: unless ``capturable=True``) and the DataLoader drawing its base seed from a CPU generator when it starts. The
#: fast filtered_lrelu's clamp check reads only when the tensor is on the CPU (tests/ops/test_filtered_lrelu.py
#: runs that op on the meta device, where any read fails).
HOST_RESIDENT_CALLERS = (("torch/optim/optimizer.py", "_get_value"), ("torch/utils/data/dataloader.py", "__init__"),
                         ("styleforge/ops/filtered_lrelu.py", "_clamp_cuts_anything"))


def _caller_is_host_resident() -> bool:
    frame = sys._getframe(2)
    path = frame.f_code.co_filename.replace("\\", "/")
    return any(path.endswith(f) and frame.f_code.co_name == fn for f, fn in HOST_RESIDENT_CALLERS)


@contextlib.contextmanager
def _count_host_reads(counts: collections.Counter):
    saved = {name: getattr(torch.Tensor, name) for name in SYNCING_METHODS}

    def wrap(name):
        original = saved[name]

        def counted(self, *args, **kwargs):
            if not _caller_is_host_resident():
                counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    try:
        for name in SYNCING_METHODS:
            setattr(torch.Tensor, name, wrap(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def count_minibatch_host_reads(monkeypatch) -> tuple[collections.Counter, list[int]]:
    """Patch the engine so that every minibatch counts its host reads into ``counts`` and appends its image
    counter to ``minibatches``; returns both (filled while training runs)."""
    counts: collections.Counter = collections.Counter()
    minibatches: list[int] = []
    original = engine_mod._Engine.minibatch

    def counted_minibatch(self):
        with _count_host_reads(counts):
            original(self)
        minibatches.append(self.n.cur_nimg)

    monkeypatch.setattr(engine_mod._Engine, "minibatch", counted_minibatch)
    return counts, minibatches


@pytest.mark.parametrize("cfg", ["stylegan2-tiny", "stylegan3-r-tiny"])
def test_no_host_read_in_the_minibatch_path(toy_data, tmp_path, monkeypatch, cfg):
    # 6 minibatches of 4 images in 2 rounds each, one tick: every phase (Gmain, Greg with pl lengths, Dmain with
    # ADA signs, Dreg) and the ADA adjustment run; the tick's statistics are read only at the end.
    config = tiny_config(toy_data, cfg=cfg, ticks=1, tick_images=24, batch_gpu=2)
    counts, minibatches = count_minibatch_host_reads(monkeypatch)
    res = train(config, run_dir=tmp_path / "run", device="cpu", log=lambda m: None)
    assert len(minibatches) == 6 and res.cur_tick == 1
    assert sum(counts.values()) == 0, f"host reads in the minibatch path: {dict(counts)}"
    # The statistics still arrive, once per tick: ADA moved p, pl_mean moved.
    state = load_training_state(tmp_path / "run")
    assert state["augment_p"] != pytest.approx(0.2)
    assert (float(state["pl_mean"]) > 0) == (cfg == "stylegan2-tiny")  # StyleGAN3 has no path-length term
    assert np.isfinite(res.stats[-1]["ada_rt"])


def test_the_counter_sees_host_reads():
    counts: collections.Counter = collections.Counter()
    with _count_host_reads(counts):
        t = torch.ones(2)
        float(t.sum()), t.tolist(), bool(t.all()), t.cpu(), t.sum().item()
    assert all(counts[k] >= 1 for k in ("__float__", "tolist", "__bool__", "cpu", "item"))


class _Order:
    """Positions -> indices of an explicit order (a stand-in for the engine's DataOrder)."""

    def __init__(self, n: int) -> None:
        self.order = engine_mod.DataOrder(n, seed=3)

    def indices(self, start, count):
        return self.order.indices(start, count)


class _Numbers:
    """Item i is a 1x2x2 image filled with i % 256 and the label [i]."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((1, 2, 2), i % 256, dtype=np.uint8), np.array([i], dtype=np.float32)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_stream_order_depends_on_seed_and_counter_only(workers):
    n, world = 50, 2
    order = _Order(n)
    expected_order = engine_mod.DataOrder(n, seed=3)

    batch_gpu = [2]

    def plan(nimg):
        return 8, batch_gpu[0], 8 // (batch_gpu[0] * world)  # batch 8, batch_gpu 2: 2 rounds per process

    for rank in range(world):
        batch_gpu[0] = 2
        stream = RealStream(_Numbers(n), order, plan, rank, world, torch.device("cpu"), workers)
        try:
            for nimg in range(0, 8 * 8, 8):  # 8 minibatches: crosses an epoch boundary (50 items)
                for r in range(2):
                    chunk = r * world + rank
                    img, c = stream.get(nimg, chunk, 2)
                    want = expected_order.indices(nimg + chunk * 2, 2)
                    assert c[:, 0].tolist() == want.tolist()
                    assert torch.equal(img, torch.from_numpy(want % 256).float().view(2, 1, 1, 1).expand(2, 1, 2, 2)
                                       / 127.5 - 1)
            assert stream.restarts == 1
            # The per-process batch changes (e.g. halved after an out-of-memory error): the prefetched chunks no
            # longer fit, and the loader restarts at the wanted one.
            batch_gpu[0] = 1
            img, c = stream.get(64, rank, 1)
            assert c[:, 0].tolist() == expected_order.indices(64 + rank, 1).tolist()
            assert stream.restarts == (1 if workers == 0 else 2)  # without workers nothing was read ahead
        finally:
            stream.close()


def test_default_workers():
    assert default_workers(100) == 0  # small sets are read in the training process
    assert 1 <= default_workers(100_000) <= 4


def test_training_with_workers_equals_training_without(toy_data, tmp_path):
    base = tiny_config(toy_data, ticks=1, tick_images=12)
    runs = {}
    for workers in (0, 2):
        cfg = dataclasses.replace(base, workers=workers)
        train(cfg, run_dir=tmp_path / f"w{workers}", device="cpu", log=lambda m: None)
        runs[workers] = load_training_state(tmp_path / f"w{workers}")
    for net in ("G", "D"):
        for k, v in runs[0][net].items():
            assert torch.equal(v, runs[2][net][k]), f"{net}.{k} differs with 2 workers"


def test_cuda_precision_policy_is_set_and_restored():
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,  # noqa: E731
                     torch.backends.cudnn.benchmark)
    before = flags()
    cfg = dataclasses.replace(tiny_config("x"), allow_tf32=False, cudnn_benchmark=True)
    with engine_mod._precision_policy(cfg, torch.device("cuda")):
        assert flags() == (False, False, True)
    with engine_mod._precision_policy(dataclasses.replace(cfg, allow_tf32=True, cudnn_benchmark=False),
                                      torch.device("cuda")):
        assert flags() == (True, True, False)
    assert flags() == before
    with engine_mod._precision_policy(cfg, torch.device("cpu")):
        assert flags() == before  # nothing changes for a CPU run


def test_one_process_honours_cuda_index_and_torchrun_uses_local_rank(monkeypatch):
    from styleforge.training import distributed

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.init_from_env("cuda:3").device == torch.device("cuda:3")
    assert distributed.init_from_env("cuda").device == torch.device("cuda:0")
    assert chosen == [torch.device("cuda:3"), torch.device("cuda:0")]
    assert distributed.init_from_env("cpu").device == torch.device("cpu")
    assert isinstance(distributed.init_from_env("cpu"), DistContext)


def test_cli_flags_reach_the_config(toy_data):
    import json

    from click.testing import CliRunner

    from styleforge.cli.train import command

    res = CliRunner().invoke(command, ["--cfg", "stylegan2-tiny", "--data", str(toy_data), "--workers", "3",
                                       "--allow-tf32", "--nobench", "--dry-run"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg["workers"] == 3 and cfg["allow_tf32"] is True and cfg["cudnn_benchmark"] is False
    res = CliRunner().invoke(command, ["--cfg", "stylegan2-tiny", "--data", str(toy_data), "--dry-run"])
    cfg = json.loads(res.output)
    assert cfg["workers"] is None and cfg["allow_tf32"] is False and cfg["cudnn_benchmark"] is True


def _open_worker(rank: int, world: int, port: int, config, out_dir: str) -> None:
    import os

    from styleforge.training.distributed import init_from_env

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1", STYLEFORGE_CACHE=os.path.join(out_dir, "cache"))
    ctx = init_from_env("cpu")
    try:
        train(config, run_dir=os.path.join(out_dir, "run"), dist_ctx=ctx, log=lambda m: None)
    except Exception as e:  # noqa: BLE001  (the message is what the test compares)
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(f"{type(e).__name__}: {e}")
    finally:
        ctx.shutdown(barrier=False)


def test_bad_data_stops_every_rank_with_the_report(tmp_path):
    import shutil
    import socket

    import torch.multiprocessing as mp
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(data / f"{i}.png")
    (data / "broken.png").write_bytes(b"")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_open_worker, args=(2, port, tiny_config(data), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    msgs = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert all(m.startswith("UserInputError") and "broken.png: empty file" in m for m in msgs), msgs
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_no_host_read_in_the_pggan_minibatch_path(tmp_path, monkeypatch):
    # Through the fade-in of 8x8 (alpha changes every minibatch) and its stabilisation: the stage lives in device
    # buffers, read from the host copy that set_stage keeps.
    from tests.training.test_progressive import _config, _Squares

    counts, minibatches = count_minibatch_host_reads(monkeypatch)
    cfg = dataclasses.replace(_config(kimg=0.104), tick_kimg=1.0)  # 13 minibatches of 8, one tick
    train(cfg, run_dir=tmp_path / "run", dataset=_Squares(), device="cpu", log=lambda m: None)
    assert len(minibatches) == 13 and sum(counts.values()) == 0, dict(counts)

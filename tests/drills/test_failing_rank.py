"""A failing rank: two gloo processes under torchrun, rank 1 raising in the middle of a tick. Every process exits
within a timeout, the failing rank's message is in the output, and the last good snapshot stays usable."""

from __future__ import annotations

import os
import time

import torch

import styleforge
from styleforge.training.checkpoint import load_latest_state
from tests.drills import _proc


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_rank_raising_mid_tick_stops_every_process(toy_data, tmp_path):
    outdir, log = tmp_path / "runs", tmp_path / "drill.log"
    # 8-image minibatches (one 4-image chunk per process), a tick and a snapshot per minibatch; rank 1 raises in
    # its 7th loss computation, in the third minibatch, after two snapshots.
    args = ["train", "--cfg", "stylegan2-tiny", "--data", str(toy_data), "--outdir", str(outdir), "--batch", "8",
            "--batch-gpu", "4", "--tick", "0.008", "--kimg", "0.08", "--snap", "1", "--device", "cpu"]
    proc = _proc.start(args, log, processes=2, DRILL_FAIL="1:7")
    t0 = time.monotonic()
    code = _proc.wait(proc, timeout=120)
    took = time.monotonic() - t0
    assert not _alive(proc.pid), "a training process outlived the job"
    out = log.read_text()
    assert code != 0, out[-3000:]
    assert "drill: rank 1 fails in minibatch 2" in out, out[-3000:]
    root_cause = out.split("Root Cause (first observed failure)")[-1]
    assert "rank      : 1" in root_cause and "drill: rank 1 fails in minibatch 2" in root_cause, root_cause
    run = _proc.latest_run(outdir)
    state, _ = load_latest_state(run)
    assert state["cur_nimg"] == 16 and state["world_size"] == 2
    nets = styleforge.load(run)  # the newest snapshot of the run
    img = nets.generator(torch.randn(2, nets.generator.z_dim), torch.zeros(2, 0))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    print(f"failing rank: the job ended {took:.1f} s after its start")

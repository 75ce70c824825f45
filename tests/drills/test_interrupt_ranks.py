"""Ctrl-C under several processes: the ranks agree on the minibatch at which they stop, without a host wait."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from styleforge.training import engine as engine_mod
from styleforge.training.checkpoint import load_training_state
from styleforge.training.distributed import init_from_env
from styleforge.training.loop import train
from tests.training.conftest import tiny_config
from tests.training.test_training import _free_port, _quiet


def _worker(rank: int, world: int, port: int, config, run_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    original = engine_mod._Engine.minibatch

    def minibatch(self) -> None:
        original(self)
        if rank == 1 and self.n.batch_idx == 2:  # a Ctrl-C seen by rank 1 only, after its second minibatch
            self.stop_requested = True

    engine_mod._Engine.minibatch = minibatch
    ctx = init_from_env("cpu")
    try:
        res = train(config, run_dir=run_dir, dist_ctx=ctx, log=_quiet)
    finally:
        ctx.shutdown()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"cur_nimg": res.cur_nimg, "interrupted": res.interrupted}))


def test_one_rank_interrupted_stops_every_rank_at_the_same_minibatch(toy_data, tmp_path):
    config = tiny_config(toy_data, batch=8, batch_gpu=4, ticks=8, tick_images=16)
    mp.start_processes(_worker, args=(2, _free_port(), config, str(tmp_path / "run"), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # The vote of minibatch 2 is read two minibatches later (engine._STOP_VOTE_LAG): both stop after minibatch 4.
    assert results[0] == results[1] == {"cur_nimg": 8 * (2 + engine_mod._STOP_VOTE_LAG), "interrupted": True}
    assert load_training_state(tmp_path / "run")["cur_nimg"] == 32

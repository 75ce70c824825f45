"""Ctrl-C and SIGTERM drills: the first SIGINT (or SIGTERM, as torchrun forwards it and cluster schedulers send it
before preempting a job) finishes the minibatch and writes a snapshot and a training state; a second one exits at
once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from click.testing import CliRunner

from styleforge.cli.train import command
from styleforge.training.checkpoint import load_latest_state
from tests.drills import _proc


def _args(toy_data, outdir) -> list[str]:
    # 100 ticks of 4 images and no periodic snapshot: a training state exists only if the interrupt writes it.
    return ["train", "--cfg", "stylegan2-tiny", "--data", str(toy_data), "--outdir", str(outdir), "--batch", "4",
            "--tick", "0.004", "--kimg", "0.4", "--snap", "1000", "--device", "cpu"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_first_ctrl_c_or_sigterm_writes_a_final_state_and_the_run_resumes_from_it(toy_data, tmp_path, signum):
    outdir, log = tmp_path / "runs", tmp_path / "drill.log"
    # With a loader worker process, and the signal sent to the whole process group as a terminal's Ctrl-C is.
    proc = _proc.start([*_args(toy_data, outdir), "--workers", "1"], log)
    assert _proc.wait_for(lambda: _proc.stats_lines(_proc.latest_run(outdir)) >= 2, 120, proc), log.read_text()
    os.killpg(proc.pid, signum)
    assert _proc.wait(proc, timeout=60) == 128 + signum, log.read_text()[-2000:]
    run = _proc.latest_run(outdir)
    state, _ = load_latest_state(run)
    assert state["cur_nimg"] >= 8 and state["cur_nimg"] % 4 == 0
    out = log.read_text()
    assert f"Interrupted at kimg {state['cur_nimg'] / 1000:g}" in out and "--resume" in out
    _proc.check_snapshots(run, state)
    # It continues where it stopped (a short run to the next tick, in this process).
    r = CliRunner().invoke(command, ["--resume", "latest", "--outdir", str(outdir), "--kimg",
                                     str((state["cur_nimg"] + 4) / 1000), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert f"at tick {state['cur_tick']}," in (run / "log.txt").read_text()
    assert load_latest_state(run)[0]["cur_nimg"] == state["cur_nimg"] + 4


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_second_ctrl_c_or_sigterm_exits_at_once(toy_data, tmp_path, signum):
    outdir, log = tmp_path / "runs", tmp_path / "drill.log"
    proc = _proc.start(_args(toy_data, outdir), log)
    assert _proc.wait_for(lambda: _proc.stats_lines(_proc.latest_run(outdir)) >= 1, 120, proc), log.read_text()
    proc.send_signal(signum)
    time.sleep(0.02)
    proc.send_signal(signum)
    t0 = time.monotonic()
    code = _proc.wait(proc, timeout=60)
    assert code not in (0, 128 + signum) and time.monotonic() - t0 < 10, log.read_text()[-2000:]
    run = _proc.latest_run(outdir)
    assert not list(run.glob("training_state*")) and not list(run.glob(".*.tmp"))

"""Helpers of the drills: launching ``styleforge train`` through the harness and reading what a run left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

import styleforge
from styleforge.training.checkpoint import load_latest_state
from styleforge.utils.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]


def drill_env(**extra: str) -> dict[str, str]:
    """The environment of a drill subprocess: one thread (bit-identical to an in-process run), no CUDA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRILL_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.update(extra)
    return env


def start(args: list[str], log: Path, processes: int = 0, **env: str) -> subprocess.Popen:
    """``styleforge ARGS`` through :mod:`tests.drills.harness` (under ``torchrun --nproc_per_node PROCESSES`` when
    given), in its own process group, output appended to ``log``."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes else []
    out = open(log, "ab")  # noqa: SIM115  (closed by wait())
    proc = subprocess.Popen([sys.executable, *launcher, "-m", "tests.drills.harness", *args], cwd=REPO,
                            env=drill_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc._drill_log = out  # type: ignore[attr-defined]
    return proc


def wait(proc: subprocess.Popen, timeout: float) -> int:
    """The exit code (killing the process group when it overruns ``timeout``)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        proc._drill_log.close()  # type: ignore[attr-defined]


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL, the way an out-of-memory killer or a lost node ends a run."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    wait(proc, timeout=30)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, poll: float = 0.02) -> bool:  # noqa: ANN001
    """Poll ``predicate()`` until it holds (True), the process ends or ``timeout`` passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(poll)
    return False


def latest_run(outdir: Path) -> Path | None:
    runs = sorted(d for d in outdir.iterdir() if d.is_dir() and d.name[:5].isdigit()) if outdir.is_dir() else []
    return runs[-1] if runs else None


def newest_state(run_dir: Path) -> dict | None:
    """The state a resume would start from; a fallback to an older state (a damaged file) fails the drill."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return load_latest_state(run_dir)[0]
    except UserInputError as e:
        if "No training state" in str(e):
            return None
        raise


def stats_lines(run_dir: Path | None) -> int:
    p = run_dir / "stats.jsonl" if run_dir is not None else None
    return len(p.read_text().splitlines()) if p is not None and p.is_file() else 0


def check_snapshots(run_dir: Path, state: dict | None) -> int:
    """Every finished snapshot loads, no two hold one image count, and one holds exactly the state's weights."""
    snaps = sorted(run_dir.glob("network-snapshot-*"))
    counts = []
    for snap in snaps:
        nets = styleforge.load(snap)
        assert nets.G_ema is not None and nets.D is not None, snap
        counts.append(json.loads((snap / "config.json").read_text())["extra"]["cur_nimg"])
        if state is not None and counts[-1] == state["cur_nimg"]:
            weights = nets.G_ema.state_dict()
            assert all(torch.equal(weights[k], v) for k, v in state["G_ema"].items()), snap
    assert len(set(counts)) == len(counts), counts
    if state is not None:
        assert state["cur_nimg"] in counts, ("no snapshot of the state's image count", state["cur_nimg"], counts)
    return len(snaps)

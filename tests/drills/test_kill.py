"""Kill -9 drill: ``styleforge train`` SIGKILLed at 10 seeded moments, resumed with ``--resume latest`` each time.

The moments: at a random time during start-up, at a random time within the first ticks, inside the N-th fsync of
a file in the run directory (a snapshot, state, config or grid write, just before its rename) and inside the
N-th pass of a metric. After every kill: the state a resume starts from is the newest complete one (never a
fallback), its image counter never goes backwards, every finished snapshot loads, the newest snapshot holds the
state's weights or those of the tick after it, and the resumed process says it resumes at that state's tick. At
the end the weights equal an uninterrupted run of the same length, bit for bit.
"""

from __future__ import annotations

import os
import random
import re

import pytest
import torch
from click.testing import CliRunner

from styleforge.cli.train import command
from styleforge.metrics import registry
from styleforge.training.checkpoint import load_latest_state
from tests.drills import _proc
from tests.drills.harness import _install_metric

#: Kills per drill (STYLEFORGE_RUN_SLOW=1: three seeds).
KILLS = 10
SEEDS = (13, 14, 15) if os.environ.get("STYLEFORGE_RUN_SLOW") == "1" else (13,)
#: 16 ticks of one 4-image minibatch, a snapshot, a state and a metric pass at every tick.
TICKS, TICK_IMAGES = 16, 4


def _args(toy_data, outdir) -> list[str]:
    return ["--cfg", "stylegan2-tiny", "--data", str(toy_data), "--outdir", str(outdir), "--batch", "4",
            "--tick", str(TICK_IMAGES / 1000), "--kimg", str(TICKS * TICK_IMAGES / 1000), "--snap", "1",
            "--metrics", "drill_mean_pixel", "--device", "cpu"]


def _plan(seed: int) -> list[tuple[str, float]]:
    """``KILLS`` moments: (kind, parameter), at least two of each kind, in a seeded order."""
    rng = random.Random(seed)
    kinds = ["startup", "startup", "train", "train", "write", "write", "write", "metric", "metric"]
    kinds += [rng.choice(["train", "write", "metric"]) for _ in range(KILLS - len(kinds))]
    rng.shuffle(kinds)
    params = {"startup": lambda: rng.uniform(0.3, 4.0), "train": lambda: rng.uniform(0.0, 0.6),
              "write": lambda: rng.randint(1, 6), "metric": lambda: rng.randint(1, 2)}
    return [(k, params[k]()) for k in kinds]


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_at_ten_moments_loses_nothing(toy_data, tmp_path, seed):
    outdir, log = tmp_path / "runs", tmp_path / "drill.log"
    args = _args(toy_data, outdir)
    events = tmp_path / "events"
    last_nimg, kills, resumes_checked = -1, [], 0
    for kind, param in _plan(seed):
        run = _proc.latest_run(outdir)
        state = _proc.newest_state(run) if run is not None else None
        resume = state is not None
        cmd = ["train", "--resume", "latest", "--outdir", str(outdir), "--device", "cpu"] if resume else \
            ["train", *args]
        env = {"DRILL_EVENTS": str(events)}
        if kind in ("write", "metric"):
            env["DRILL_HOLD"] = f"{kind}:{param}"
        hold = events / "hold"
        hold.unlink(missing_ok=True)
        log_before = (run / "log.txt").read_text() if resume else ""
        lines_before = _proc.stats_lines(run if resume else None)
        proc = _proc.start(cmd, log, **env)
        if kind == "startup":
            _proc.wait_for(lambda: False, param, proc)
        elif kind == "train":  # a random moment within the first two ticks of this process
            _proc.wait_for(lambda n=lines_before: _proc.stats_lines(_proc.latest_run(outdir)) > n, 60, proc)
            _proc.wait_for(lambda: False, param, proc)
        else:
            assert _proc.wait_for(hold.exists, 60, proc), f"{kind}:{param} never reached; see {log}"
        assert proc.poll() is None, f"the run ended before kill {len(kills) + 1} ({kind}); see {log}"
        _proc.kill9(proc)
        kills.append((kind, param))

        run = _proc.latest_run(outdir)
        if run is None:
            continue
        if resume:  # the killed process, if it got that far, said it resumed at the newest state's tick
            started = re.findall(r"Resuming \S+ at tick (\d+)", (run / "log.txt").read_text()[len(log_before):])
            assert [int(t) for t in started] in ([], [state["cur_tick"]]), (started, state["cur_tick"])
            resumes_checked += len(started)
        state = _proc.newest_state(run)
        if state is None:
            continue
        assert state["cur_nimg"] >= last_nimg, "the image counter went backwards"
        last_nimg = state["cur_nimg"]
        _proc.check_snapshots(run, state)
    assert len(kills) == KILLS

    # The last resume runs to the end, and an uninterrupted run of the same length runs from the start: both in
    # this process with one thread, as the subprocesses.
    if "drill_mean_pixel" not in registry._METRICS:
        _install_metric(None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = _proc.latest_run(outdir)
        r = CliRunner().invoke(command, ["--resume", "latest", "--outdir", str(outdir), "--device", "cpu"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(command, _args(toy_data, tmp_path / "straight"))
        assert r.exit_code == 0, r.output
    finally:
        torch.set_num_threads(threads)
    final, _ = load_latest_state(run)
    assert final["cur_nimg"] == TICKS * TICK_IMAGES
    _proc.check_snapshots(run, final)
    assert resumes_checked >= 3
    straight, _ = load_latest_state(_proc.latest_run(tmp_path / "straight"))
    for net in ("G", "D", "G_ema"):
        assert straight[net].keys() == final[net].keys()
        for k, v in straight[net].items():
            assert torch.equal(final[net][k], v), f"{net}.{k} differs from the uninterrupted run"
    assert final["augment_p"] == straight["augment_p"]
    print(f"kill drill seed {seed}: {KILLS} kills {kills}, {resumes_checked} resumes checked")

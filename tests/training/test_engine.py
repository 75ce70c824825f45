"""The shared engine: honest resume, fine-tuning defaults, caller's RNG untouched, PGGAN on the engine's flags."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import styleforge
from styleforge.cli.train import command
from styleforge.training.checkpoint import load_training_state
from styleforge.training.config import make_train_config
from styleforge.training.loop import train
from styleforge.utils.errors import UserInputError
from tests.training.conftest import tiny_config


def _quiet(_msg: str) -> None:
    pass


def _g_ema(run_dir):
    return load_training_state(run_dir)["G_ema"]


def test_train_leaves_the_callers_generators_alone(toy_data, tmp_path):
    torch.manual_seed(1234)
    np.random.seed(1234)
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()
    train(tiny_config(toy_data, ticks=1), run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert torch.equal(torch.get_rng_state(), torch_before)
    numpy_after = np.random.get_state()
    assert numpy_after[0] == numpy_before[0] and np.array_equal(numpy_after[1], numpy_before[1])
    assert numpy_after[2:] == numpy_before[2:]


def test_resume_latest_alone_continues_the_saved_run_exactly(toy_data, tmp_path):
    cfg = dataclasses.replace(tiny_config(toy_data, ticks=3), outdir=str(tmp_path / "runs"))
    train(cfg, run_dir=tmp_path / "straight", device="cpu", log=_quiet)
    stopped = train(cfg, device="cpu", log=_quiet, time_limit_s=0)  # stops after its first minibatch
    assert stopped.cur_nimg == 4
    r = CliRunner().invoke(command, ["--resume", "latest", "--outdir", str(tmp_path / "runs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    state = load_training_state(stopped.run_dir)
    assert state["cur_nimg"] == 24  # the saved --kimg (0.024), not a default
    straight = _g_ema(tmp_path / "straight")
    assert all(torch.equal(straight[k], v) for k, v in state["G_ema"].items())


def test_resume_refuses_run_changing_flags_and_allows_them_by_name(toy_data, tmp_path):
    common = ["--cfg", "stylegan2-tiny", "--data", str(toy_data), "--outdir", str(tmp_path), "--batch", "4",
              "--tick", "0.004", "--device", "cpu"]
    assert CliRunner().invoke(command, [*common, "--kimg", "0.004"]).exit_code == 0
    r = CliRunner().invoke(command, ["--resume", "latest", "--outdir", str(tmp_path), "--gamma", "1", "--mirror",
                                     "--kimg", "0.008", "--device", "cpu"])
    assert r.exit_code != 0
    assert "--gamma (loss.r1_gamma): saved 0.0128, now 1.0" in r.output
    assert "--mirror (mirror): saved False, now True" in r.output
    assert "--allow-change gamma --allow-change mirror" in r.output
    r = CliRunner().invoke(command, ["--resume", "latest", "--outdir", str(tmp_path), "--gamma", "1",
                                     "--allow-change", "gamma", "--kimg", "0.008", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (run,) = tmp_path.iterdir()
    log = (run / "log.txt").read_text()
    assert "changed on resume: --gamma (loss.r1_gamma) 0.0128 -> 1.0" in log
    assert "changed on resume: --kimg 0.004 -> 0.008" in log
    assert json.loads((run / "config.json").read_text())["train"]["loss"]["r1_gamma"] == 1.0


def test_library_resume_with_a_different_config_is_refused(toy_data, tmp_path):
    cfg = tiny_config(toy_data, ticks=1)
    train(cfg, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    other = dataclasses.replace(cfg, seed=5, mirror=True)
    with pytest.raises(UserInputError, match=r"--seed \(seed\): saved 0, now 5.*--allow-change mirror --allow-ch"):
        train(other, resume=str(tmp_path / "run"), device="cpu", log=_quiet)


def test_fine_tuning_from_a_network_uses_the_transfer_defaults(toy_data, tmp_path):
    cfg = tiny_config(toy_data, cfg="stylegan3-r-tiny", ticks=1)
    first = train(cfg, run_dir=tmp_path / "a", device="cpu", log=_quiet)
    tuned = train(cfg, run_dir=tmp_path / "b", resume=str(first.final_snapshot), device="cpu", log=_quiet)
    saved = json.loads((tuned.run_dir / "config.json").read_text())["train"]
    assert saved["augment"]["ada_kimg"] == 100 and saved["ema_rampup"] is None
    assert saved["loss"]["blur_init_sigma"] == 0 and saved["init_from"] == str(first.final_snapshot)
    assert cfg.loss.blur_init_sigma == 10 and cfg.ema_rampup == 0.05  # the defaults of a run from scratch


def test_metrics_of_a_mirrored_dataset_see_each_image_once(toy_data, tmp_path):
    from styleforge.metrics import registry

    seen = []
    if "test_dataset_size" not in registry._METRICS:
        registry.register_metric("test_dataset_size")(lambda ctx: seen.append(len(ctx.dataset)) or {"n": 0})
    cfg = dataclasses.replace(tiny_config(toy_data, ticks=1), mirror=True, metrics=("test_dataset_size",))
    train(cfg, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert seen and set(seen) == {16}  # the 16 images, not the 32 items of the mirrored set


def _pggan_config(data, **kw):
    from styleforge.training.config import GrowthSchedule, ProgressiveConfig

    schedule = GrowthSchedule(stabilize_kimg=0.016, fade_kimg=0.016, batch_sizes=((8, 8),))
    return make_train_config("pggan-tiny", str(data), progressive=ProgressiveConfig(schedule=schedule, ema_beta=0.9),
                             gamma_resolution=8, resolution=8, grid_size=4, **kw)


def test_pggan_honours_the_engine_flags(toy_data, tmp_path):
    cfg = _pggan_config(toy_data, batch=4, batch_gpu=2, tick=0.008, snap=1, glr=0.003, dlr=0.0005, mirror=True)
    assert cfg.kimg == 0.048  # 4 px, fade 8 px, stabilise 8 px: 16 images each
    lines = []
    res = train(cfg, run_dir=tmp_path / "run", device="cpu", log=lines.append)
    assert res.cur_nimg == 48 and [r["kimg"] for r in res.stats] == [0.008 * (i + 1) for i in range(6)]
    state = load_training_state(tmp_path / "run")
    assert state["opt_G"]["param_groups"][0]["lr"] == 0.003 and state["opt_D"]["param_groups"][0]["lr"] == 0.0005
    assert sum(x.startswith("snapshot ") for x in lines) == 6  # --snap 1: every tick
    assert (tmp_path / "run" / "fakes_res4.png").is_file() and (tmp_path / "run" / "fakes_res8.png").is_file()
    G = styleforge.load(res.final_snapshot).G_ema
    assert (G.current_resolution, G.alpha) == (8, 1.0)


def test_pggan_refuses_what_it_cannot_use(toy_data, tmp_path):
    for flags, named in ((["--gamma", "1"], "--gamma"), (["--aug", "ada", "--p", "0.1"], "--aug, --p"),
                         (["--cbase", "512"], "--cbase")):
        r = CliRunner().invoke(command, ["--cfg", "pggan-tiny", "--data", str(toy_data), "--outdir", str(tmp_path),
                                         "--dry-run", *flags])
        assert r.exit_code != 0 and named in r.output, r.output
    r = CliRunner().invoke(command, ["--cfg", "stylegan2-tiny", "--data", str(toy_data), "--no-growing", "--dry-run"])
    assert r.exit_code != 0 and "--no-growing is a PGGAN option" in r.output


def test_pggan_without_growing_trains_the_final_resolution_from_the_start(toy_data, tmp_path):
    cfg = _pggan_config(toy_data, no_growing=True, tick=0.016)
    assert cfg.kimg == 0.048 and not cfg.progressive.schedule.growing  # as many images as the growing schedule
    lines = []
    res = train(cfg, run_dir=tmp_path / "run", device="cpu", log=lines.append)
    assert [r["resolution"] for r in res.stats] == [8.0, 8.0, 8.0]
    assert any(x.startswith("phase 0: stabilise 8px at 0 images") for x in lines)


def test_pggan_resume_latest_through_the_cli(toy_data, tmp_path):
    common = ["--cfg", "pggan-tiny", "--data", str(toy_data), "--outdir", str(tmp_path), "--resolution", "8",
              "--batch", "4", "--device", "cpu"]
    assert CliRunner().invoke(command, [*common, "--kimg", "0.008"]).exit_code == 0
    r = CliRunner().invoke(command, ["--resume", "latest", "--outdir", str(tmp_path), "--kimg", "0.016",
                                     "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (run,) = tmp_path.iterdir()
    assert load_training_state(run)["cur_nimg"] == 16 and "Resuming" in (run / "log.txt").read_text()


def test_snapshots_within_one_kimg_keep_their_own_names(toy_data, tmp_path):
    # Ticks of 8 images with a snapshot at each: all three fall in kimg 0. Each keeps its own network (the whole
    # kimg alone named them all network-snapshot-000000, so each overwrote the one before).
    res = train(tiny_config(toy_data, ticks=3), run_dir=tmp_path / "run", device="cpu", log=_quiet)
    names = sorted(p.name for p in (tmp_path / "run").glob("network-snapshot-*"))
    assert names == ["network-snapshot-000000", "network-snapshot-000000.016", "network-snapshot-000000.024"]
    counts = [json.loads((tmp_path / "run" / n / "config.json").read_text())["extra"]["cur_nimg"] for n in names]
    assert counts == [8, 16, 24]
    assert res.final_snapshot.name == names[-1]
    # A run directory loads as its newest snapshot, and that holds the final state's weights.
    G = styleforge.load(tmp_path / "run").G_ema.state_dict()
    assert all(torch.equal(G[k], v) for k, v in _g_ema(tmp_path / "run").items())


def test_snapshot_path_reuses_a_name_only_for_the_same_image_count(tmp_path):
    from styleforge.loading import _snapshots, snapshot_path

    def finished(name, nimg):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"networks": {}, "extra": {"cur_nimg": nimg}}))

    assert snapshot_path(tmp_path, 16_000).name == "network-snapshot-000016"
    finished("network-snapshot-000016", 16_000)
    assert snapshot_path(tmp_path, 16_000).name == "network-snapshot-000016"  # written again after a resume
    assert snapshot_path(tmp_path, 16_936).name == "network-snapshot-000016.936"
    assert snapshot_path(tmp_path, 17_004).name == "network-snapshot-000017"
    finished("network-snapshot-000016.936", 16_936)
    finished("network-snapshot-000002", 2_000)
    finished("network-snapshot-000017", 17_004)
    (tmp_path / "network-snapshot-000018").mkdir()  # unfinished: no config.json
    assert [p.name for p in _snapshots(tmp_path)] == [
        "network-snapshot-000002", "network-snapshot-000016", "network-snapshot-000016.936", "network-snapshot-000017"]


def test_cpu_training_runs_inside_the_retained_heap(toy_data, tmp_path, monkeypatch):
    import contextlib

    import styleforge.training.engine as engine

    seen = []

    @contextlib.contextmanager
    def recording(enabled=None):
        seen.append(("enter", enabled))
        yield True
        seen.append(("exit", enabled))

    monkeypatch.setattr(engine, "retained_heap", recording)
    train(tiny_config(toy_data, ticks=1), run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert seen == [("enter", None), ("exit", None)]  # None: on unless STYLEFORGE_RETAIN_HEAP=0

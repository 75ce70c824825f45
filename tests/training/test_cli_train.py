"""``styleforge train``: dry run, a short run and ``--resume latest`` through the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from styleforge.cli.train import command


def test_dry_run_prints_resolved_config(toy_data, tmp_path):
    r = CliRunner().invoke(command, ["--cfg", "stylegan3-r-tiny", "--data", str(toy_data), "--batch", "8",
                                     "--mirror", "--aug", "fixed", "--p", "0.3", "--dry-run", "--cbase", "1024",
                                     "--cmax", "64", "--map", "3", "--glr", "0.003",
                                     "--outdir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output)
    assert cfg["cfg"] == "stylegan3-r-tiny" and cfg["mirror"]
    assert cfg["augment"]["mode"] == "fixed" and cfg["augment"]["p"] == 0.3
    assert cfg["loss"]["blur_init_sigma"] == 10 and cfg["loss"]["pl_weight"] == 0
    assert cfg["loss"]["r1_gamma"] == 0.0002 * 16**2 / 8  # the heuristic at the data's 16 px
    assert cfg["ema_kimg"] == 8 * 10 / 32 and cfg["g_opt"]["lr"] == 0.003 and cfg["d_opt"]["lr"] == 0.002
    # As the official tool, stylegan3-r doubles G's --cbase/--cmax (D keeps them).
    assert cfg["model_overrides"]["G"] == {"channel_base": 2048, "channel_max": 128, "mapping_layers": 3,
                                           "magnitude_ema_beta": 0.5 ** (8 / 20_000)}
    assert cfg["model_overrides"]["D"] == {"channel_base": 1024, "channel_max": 64}
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_run_and_resume_latest(toy_data, tmp_path):
    common = ["--cfg", "stylegan2-tiny", "--data", str(toy_data), "--outdir", str(tmp_path), "--batch", "4",
              "--tick", "0.008", "--device", "cpu"]
    r = CliRunner().invoke(command, [*common, "--kimg", "0.008"])
    assert r.exit_code == 0, r.output
    (run,) = list(tmp_path.iterdir())
    assert run.name == f"00000-stylegan2-tiny-{toy_data.name}-gpus1-batch4-gamma0.0128"  # toy0, toy1, ...
    r = CliRunner().invoke(command, [*common, "--kimg", "0.016", "--resume", "latest"])
    assert r.exit_code == 0, r.output
    assert list(tmp_path.iterdir()) == [run]
    ticks = [json.loads(x)["tick"] for x in (run / "stats.jsonl").read_text().splitlines()]
    assert ticks == [0, 1]
    r = CliRunner().invoke(command, [*common, "--cfg", "nope"])
    assert r.exit_code != 0 and "Unknown --cfg 'nope'" in r.output


def test_demo_writes_grid_and_report(tmp_path):
    from PIL import Image

    from styleforge.cli.demo import command as demo

    r = CliRunner().invoke(demo, ["--outdir", str(tmp_path), "--kimg", "0.016", "--batch", "8", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert report["kimg"] == 0.016 and report["wall_time_s"] > 0 and report["resolution"] == 16
    assert Image.open(tmp_path / "demo_grid.png").size == (8 * 16 * 4, 8 * 16 * 4)
    assert "s/kimg" in (tmp_path / "demo_report.txt").read_text()

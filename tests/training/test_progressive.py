"""Progressive training: schedule, fading reals, WGAN-GP, EMA, and bit-exact resume across a grow step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import styleforge
from styleforge.models.pggan import downsample_box, upsample_nearest
from styleforge.training.checkpoint import load_training_state
from styleforge.training.config import GrowthSchedule, ProgressiveConfig, WGANGPConfig, make_train_config
from styleforge.training.loop import train
from styleforge.training.progressive import prepare_reals, stage_at, total_images, update_ema, wgan_gp_losses
from styleforge.utils.errors import UserInputError


class _Squares:
    """A tiny in-memory dataset with the ``open_dataset`` contract: coloured squares on a white background."""

    def __init__(self, count: int = 16, resolution: int = 8, label_dim: int = 0) -> None:
        rng = np.random.RandomState(0)
        self.name, self.resolution, self.num_channels = "squares", resolution, 3
        self.label_dim, self.has_labels, self.num_images = label_dim, label_dim > 0, count
        self.images = np.full((count, 3, resolution, resolution), 255, dtype=np.uint8)
        self.labels = np.zeros((count, label_dim), dtype=np.float32)
        for i in range(count):
            x0, y0 = rng.randint(0, resolution // 2, size=2)
            half = resolution // 2
            self.images[i, :, y0 : y0 + half, x0 : x0 + half] = rng.randint(0, 256, (3, 1, 1))
            if label_dim:
                self.labels[i, i % label_dim] = 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]

    def get_label(self, i: int):
        return self.labels[i]


# 4x4 for 64 images, fade in 8x8 over 64, stabilise 8x8 for 64: 24 steps of 8 images.
_SCHEDULE = GrowthSchedule(stabilize_kimg=0.064, fade_kimg=0.064, batch_sizes=((8, 8),))


def _config(kimg=None, **kw):
    recipe = ProgressiveConfig(schedule=_SCHEDULE, ema_beta=0.9)
    return make_train_config("pggan-tiny", "squares", progressive=recipe, tick=0.032, grid_size=4, kimg=kimg,
                             gamma_resolution=8, **kw)


def _run(cfg, run_dir, data, **kw):
    return train(cfg, run_dir=run_dir, dataset=data, device="cpu", log=kw.pop("log", lambda s: None), **kw)


def test_schedule_phases_and_alpha():
    s = GrowthSchedule(stabilize_kimg=1, fade_kimg=2)
    assert total_images(s, 16) == 1000 + 2 * (2000 + 1000)
    assert stage_at(0, s, 16) == stage_at(999, s, 16)
    assert (stage_at(999, s, 16).resolution, stage_at(999, s, 16).alpha) == (4, 1.0)
    st = stage_at(1500, s, 16)  # a quarter into fading in 8x8
    assert (st.resolution, st.alpha, st.fading, st.phase) == (8, 0.25, True, 1)
    st = stage_at(3000, s, 16)
    assert (st.resolution, st.alpha, st.fading, st.phase) == (8, 1.0, False, 2)
    assert stage_at(4000, s, 16).resolution == 16 and stage_at(4000, s, 16).alpha == 0.0
    assert stage_at(10**6, s, 16).resolution == 16 and stage_at(10**6, s, 16).alpha == 1.0
    longer_low = GrowthSchedule(stabilize_kimg=1, fade_kimg=2, kimg_per_resolution=((4, 3), (8, 0.5)))
    assert total_images(longer_low, 16) == 3000 + 2 * 500 + 2000 + 1000
    direct = GrowthSchedule(stabilize_kimg=1, fade_kimg=2, growing=False)
    assert stage_at(0, direct, 16) == stage_at(6999, direct, 16) and stage_at(0, direct, 16).resolution == 16
    assert stage_at(3250, longer_low, 16).alpha == 0.5 and stage_at(4000, longer_low, 16).resolution == 16
    paper = GrowthSchedule()
    assert [paper.batch_size(r) for r in (4, 128, 256, 512, 1024)] == [16, 16, 14, 6, 3]


def test_prepare_reals_fades_like_the_generator():
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, 16, 16), generator=gen, dtype=torch.uint8)
    full = raw.float() / 127.5 - 1
    assert torch.equal(prepare_reals(raw, 16, 1.0), full)
    torch.testing.assert_close(prepare_reals(raw, 8, 1.0), downsample_box(full), rtol=0, atol=1e-6)
    coarse = upsample_nearest(downsample_box(full, 4))
    torch.testing.assert_close(prepare_reals(raw, 8, 0.0), coarse, rtol=0, atol=1e-6)
    mid = 0.5 * upsample_nearest(downsample_box(full, 4)) + 0.5 * downsample_box(full)
    torch.testing.assert_close(prepare_reals(raw, 8, 0.5), mid, rtol=0, atol=1e-6)
    assert prepare_reals(raw, 4, 1.0).shape == (2, 3, 4, 4)


class _LinearCritic(torch.nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere, so the penalty is known in closed form."""

    c_dim = 0

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, c=None, return_label_logits=False):
        s = (x * self.w).flatten(1).sum(1, keepdim=True) + 0.5
        return (s, s[:, :0]) if return_label_logits else s


def test_wgan_gp_loss_values():
    w = torch.full((1, 2, 2), 0.25)  # |grad| = sqrt(4 * 0.0625) = 0.5
    D = _LinearCritic(w)
    fakes = torch.full((3, 1, 2, 2), -1.0)
    G = lambda z, c=None: fakes  # noqa: E731
    reals = torch.ones(3, 1, 2, 2)
    loss, stats = wgan_gp_losses(G, D, reals, torch.zeros(3, 0), torch.zeros(3, 1), torch.zeros(3, 0),
                                 torch.rand(3, 1, 1, 1), WGANGPConfig())
    d_real, d_fake = 1.0 + 0.5, -1.0 + 0.5
    expected = d_fake - d_real + 10 * (0.5 - 1.0) ** 2 + 0.001 * d_real**2
    assert stats["scores/grad_norm"].item() / 3 == pytest.approx(0.5)
    assert loss.shape == (3,) and loss.mean().item() == pytest.approx(expected, rel=1e-6)


def test_ema_follows_weights_and_copies_the_stage():
    G_ema = styleforge.create_model("pggan-tiny", img_resolution=8)
    G = styleforge.create_model("pggan-tiny", img_resolution=8).set_stage(8, 0.25)
    old = G_ema.blocks["b8"].conv0.weight.detach().clone()
    update_ema(G_ema, G, 0.9)
    expected = 0.9 * old + 0.1 * G.blocks["b8"].conv0.weight.detach()
    torch.testing.assert_close(G_ema.blocks["b8"].conv0.weight, expected)
    assert (G_ema.current_resolution, G_ema.alpha) == (8, 0.25)


def test_resume_is_bit_identical_across_a_resolution_transition(tmp_path):
    data = _Squares()
    straight = _run(_config(), tmp_path / "a", data)
    assert straight.cur_nimg == 192
    # stop before the 8x8 block appears, then in the middle of its fade-in, then run to the end
    for kimg in (0.048, 0.096, None):
        resume = str(tmp_path / "b") if kimg != 0.048 else None
        _run(_config(kimg=kimg), tmp_path / "b", data, resume=resume)
        if kimg == 0.096:
            mid = load_training_state(tmp_path / "b")["G"]  # the stage of the last step, at 88 images
            assert (int(mid["stage_resolution"]), float(mid["stage_alpha"])) == (8, 0.375)
    a, b = load_training_state(tmp_path / "a"), load_training_state(tmp_path / "b")
    assert a["cur_nimg"] == b["cur_nimg"] == 192
    for net in ("G", "D", "G_ema"):
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs after resume"
    for opt in ("opt_G", "opt_D"):
        for idx, sa in a[opt]["state"].items():
            for k in sa:
                assert torch.equal(sa[k], b[opt]["state"][idx][k]), f"{opt} {idx} {k}"
    # training moved the weights, and G grew to 8x8
    assert int(a["G"]["stage_resolution"]) == 8
    fresh = styleforge.create_model("pggan-tiny", img_resolution=8)
    assert not torch.equal(fresh.state_dict()["blocks.b8.conv0.weight"], a["G"]["blocks.b8.conv0.weight"])


def test_outputs_snapshot_and_grids(tmp_path):
    lines: list[str] = []
    result = _run(_config(), tmp_path, _Squares(), log=lines.append)
    for name in ("fakes_res4.png", "fakes_res8.png", "reals.png", "fakes_init.png"):
        assert (tmp_path / name).is_file()
    grid = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "fakes_res8.png"))
    assert grid.shape == (8, 32, 3) and grid.std() > 1  # 4 samples at the final 8x8 size, not constant
    saved = json.loads((tmp_path / "config.json").read_text())["train"]
    assert saved["progressive"]["schedule"]["fade_kimg"] == 0.064 and saved["loss"] is None
    loaded = styleforge.load(result.final_snapshot)
    G = loaded.generator
    assert (G.current_resolution, G.alpha, G.img_resolution) == (8, 1.0, 8)
    assert loaded.config["extra"]["stage_resolution"] == 8
    assert any(line.startswith("phase 1: fade in 8px") for line in lines)
    with pytest.raises(UserInputError, match=r"--glr \(g_opt.lr\): saved 0.001, now 0.002"):
        _run(_config(glr=0.002), tmp_path, _Squares(), resume=str(tmp_path))


def test_training_can_continue_beyond_the_schedule(tmp_path):
    result = _run(_config(kimg=0.208), tmp_path, _Squares())
    assert result.cur_nimg == 208  # 16 images after the last stabilisation phase
    G = styleforge.load(result.final_snapshot).generator
    assert (G.current_resolution, G.alpha) == (8, 1.0)


def test_conditional_training_runs(tmp_path):
    result = _run(_config(kimg=0.016, cond=True), tmp_path, _Squares(label_dim=2))
    G = styleforge.load(result.final_snapshot).generator
    assert G.c_dim == 2 and result.cur_nimg == 16


def test_config_is_strict():
    with pytest.raises(UserInputError, match="no_such"):
        make_train_config("pggan-tiny", "d", no_such=1, resolution=8)
    with pytest.raises(UserInputError, match="pggan-tiny"):
        make_train_config("pggan-huge", "d")
    cfg = make_train_config("pggan", "d", resolution=1024)
    assert cfg.progressive.schedule.fade_kimg == 800 and cfg.g_opt.lr == 0.001 and cfg.kimg == 800 * 17


def test_cli_train_and_generate(tmp_path):
    """``styleforge train --cfg pggan-tiny`` runs the PGGAN recipe; ``styleforge generate`` reads the snapshot."""
    from click.testing import CliRunner
    from PIL import Image

    from styleforge.cli.main import cli

    data = _Squares(count=8, resolution=32)
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(len(data)):
        Image.fromarray(data.images[i].transpose(1, 2, 0)).save(folder / f"{i}.png")
    runner = CliRunner()
    out = runner.invoke(cli, ["train", "--cfg", "pggan-tiny", "--data", str(folder), "--outdir",
                              str(tmp_path / "runs"), "--kimg", "0.032", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    snapshots = sorted(run_dir.glob("network-snapshot-*"))
    assert snapshots and (run_dir / "training_state.pt").is_file()
    gen = runner.invoke(cli, ["generate", "--network", str(snapshots[-1]), "--seeds", "0-3", "--grid",
                              "--outdir", str(tmp_path / "gen"), "--device", "cpu"])
    assert gen.exit_code == 0, gen.output
    grid = np.asarray(Image.open(tmp_path / "gen" / "grid.png"))
    assert grid.shape == (8, 8, 3)  # 2x2 samples at the current 4x4 stage
    full = runner.invoke(cli, ["generate", "--network", str(snapshots[-1]), "--seeds", "0-3", "--grid",
                               "--full-res", "--outdir", str(tmp_path / "full"), "--device", "cpu"])
    assert full.exit_code == 0, full.output
    big = np.asarray(Image.open(tmp_path / "full" / "grid.png"))
    assert big.shape == (64, 64, 3)  # the same samples upsampled to the final 32 px
    assert np.array_equal(big[::8, ::8], grid)
    again = runner.invoke(cli, ["train", "--resume", "latest", "--outdir", str(tmp_path / "runs"), "--kimg", "0.064",
                                "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert [d.name for d in (tmp_path / "runs").iterdir()] == [run_dir.name]  # continued in place
    assert "Resuming" in again.output and "at tick" in again.output

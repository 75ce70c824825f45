"""Training loop: smoke runs, exact resume, 2-process equality, NaN stop."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import styleforge
from styleforge.training.checkpoint import STATE_FILE, load_training_state
from styleforge.training.distributed import DistContext, init_from_env
from styleforge.training.loop import NonFiniteLossError, train
from styleforge.utils.errors import UserInputError
from tests.training.conftest import tiny_config


def _quiet(_msg: str) -> None:
    pass


@pytest.mark.parametrize("cfg", ["stylegan2-tiny", "stylegan3-t-tiny"])
def test_two_tick_smoke_run(toy_data, tmp_path, cfg):
    config = tiny_config(toy_data, cfg=cfg)
    res = train(config, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert res.cur_nimg == 16 and res.cur_tick == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [x["tick"] for x in lines] == [0, 1]
    for rec in lines:
        assert all(torch.isfinite(torch.tensor(v)) for k, v in rec.items() if k.startswith("loss/"))
        assert rec["loss/G"] > 0 and rec["loss/D"] > 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["cfg"] == cfg
    for name in ("reals.png", "fakes000000.png", STATE_FILE):
        assert (tmp_path / "run" / name).is_file()
    # The exported snapshot loads and holds the trained G_ema.
    loaded = styleforge.load(res.final_snapshot)
    state = load_training_state(tmp_path / "run")
    for k, v in loaded.G_ema.state_dict().items():
        torch.testing.assert_close(v, state["G_ema"][k], rtol=0, atol=0)
    # Training changed the weights.
    G0 = styleforge.create_model(cfg, img_resolution=16, c_dim=0)
    assert any(not torch.equal(v, state["G"][k]) for k, v in G0.state_dict().items() if v.is_floating_point())


def _tensors(state):
    out = {}
    for net in ("G", "D", "G_ema"):
        out.update({f"{net}.{k}": v for k, v in state[net].items()})
    for opt in ("opt_G", "opt_D"):
        for pid, s in state[opt]["state"].items():
            out.update({f"{opt}.{pid}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    out["pl_mean"] = state["pl_mean"]
    return out


@pytest.mark.parametrize("cfg", ["stylegan2-tiny", "stylegan3-r-tiny"])
def test_resume_is_bit_identical(toy_data, tmp_path, cfg):
    straight = train(tiny_config(toy_data, cfg, ticks=3), run_dir=tmp_path / "a", device="cpu", log=_quiet)
    train(tiny_config(toy_data, cfg, ticks=2), run_dir=tmp_path / "b", device="cpu", log=_quiet)
    resumed = train(tiny_config(toy_data, cfg, ticks=3), resume=str(tmp_path / "b"), device="cpu", log=_quiet)
    assert resumed.run_dir == tmp_path / "b" and resumed.cur_nimg == straight.cur_nimg == 24
    sa, sb = load_training_state(tmp_path / "a"), load_training_state(tmp_path / "b")
    assert sa["augment_p"] == sb["augment_p"] and sa["augment_p"] != 0.2  # ADA moved p
    ta, tb = _tensors(sa), _tensors(sb)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"
    assert sa["cur_tick"] == sb["cur_tick"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    try:
        train(config, run_dir=run_dir, dist_ctx=ctx, log=_quiet)
    finally:
        ctx.shutdown()


def test_two_processes_equal_one_process(toy_data, tmp_path):
    # Global batch 8 in chunks of 4: one process does 2 rounds, two processes do 1 round each.
    # pl_mean_update="after_minibatch": the option that makes N processes bit-equal to one (the official
    # formulation lets each process move pl_mean toward its own chunk's lengths).
    config = tiny_config(toy_data, batch=8, batch_gpu=4, ticks=2, tick_images=16, pl_mean_update="after_minibatch")
    # The workers run one thread each; so must the single process, or multi-threaded reductions would sum in
    # another order and the comparison could only be approximate.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, run_dir=tmp_path / "one", dist_ctx=DistContext(), log=_quiet)
    finally:
        torch.set_num_threads(threads)
    mp.start_processes(_worker, args=(2, _free_port(), config, str(tmp_path / "two")), nprocs=2, join=True,
                       start_method="spawn")
    s1, s2 = load_training_state(tmp_path / "one"), load_training_state(tmp_path / "two")
    assert s2["world_size"] == 2 and s1["cur_nimg"] == s2["cur_nimg"] == 32
    t1, t2 = _tensors(s1), _tensors(s2)
    for k in t1:
        # w_avg: each process updates it from its own chunks and the changes are summed, which equals the
        # sequential single-process update to first order in its EMA rate (0.005): allow 1e-4.
        atol = 1e-4 if k.endswith("w_avg") else 1e-6
        torch.testing.assert_close(t2[k], t1[k], rtol=1e-5, atol=atol, msg=f"{k} differs")
    assert sum(not torch.equal(t1[k], t2[k]) for k in t1 if not k.endswith("w_avg")) == 0
    assert s1["augment_p"] == pytest.approx(s2["augment_p"])


def test_nan_loss_stops_after_patience_and_keeps_last_snapshot(toy_data, tmp_path):
    good = tiny_config(toy_data, ticks=1)
    train(good, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    nan_loss = dataclasses.replace(good.loss, r1_gamma=float("nan"))
    bad = dataclasses.replace(tiny_config(toy_data, ticks=4), loss=nan_loss, nonfinite_patience=2)
    # Dreg runs every 2nd minibatch (at 2 and 4 after resuming at 2): the second NaN R1 in a row stops the run,
    # in tick 2. The snapshot of tick 1 (one NaN survived, gradients sanitised) stays the last one written.
    with pytest.raises(NonFiniteLossError, match=r"phase Dreg at tick 2 .* 2 times in a row.*last good training"):
        train(bad, resume=str(tmp_path / "run"), allow_change=("gamma",), device="cpu", log=_quiet)
    state = load_training_state(tmp_path / "run")
    assert state["cur_nimg"] == 16 and state["cur_tick"] == 2
    assert all(torch.isfinite(v).all() for net in ("G", "D") for v in state[net].values() if v.is_floating_point())


def test_a_single_nan_is_survived_with_sanitised_gradients(toy_data, tmp_path):
    cfg = tiny_config(toy_data, ticks=1)  # 2 minibatches: Dreg runs once, with a NaN gamma
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, r1_gamma=float("nan")), nonfinite_patience=2)
    lines = []
    train(cfg, run_dir=tmp_path / "run", device="cpu", log=lines.append)
    assert any("non-finite loss in phase Dreg" in x and "gradients sanitised" in x for x in lines)
    state = load_training_state(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in state["D"].values() if v.is_floating_point())


def test_bad_data_is_reported_before_training(toy_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    (data / "broken.png").write_bytes((data / "img000.png").read_bytes()[:-30])
    with pytest.raises(UserInputError, match=r"broken.png: truncated"):
        train(tiny_config(data), run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert not (tmp_path / "run").exists()
    config = dataclasses.replace(tiny_config(data, ticks=1), skip_bad=True)
    with pytest.warns(UserWarning, match="Skipping 1"):
        assert train(config, run_dir=tmp_path / "run", device="cpu", log=_quiet).cur_nimg == 8


def test_freezed_layers_of_d_do_not_change(toy_data, tmp_path):
    config = dataclasses.replace(tiny_config(toy_data, ticks=1), freezed=2)
    train(config, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    state = load_training_state(tmp_path / "run")
    torch.manual_seed(config.seed)
    styleforge.create_model(config.model, "G", img_resolution=16, num_fp16_res=0)
    D0 = styleforge.create_model(config.model, "D", img_resolution=16, num_fp16_res=0, freeze_layers=2)
    same = [k for k, v in D0.state_dict().items() if torch.equal(v, state["D"][k])]
    changed = [k for k, v in D0.state_dict().items() if not torch.equal(v, state["D"][k])]
    frozen = {n for n, _ in D0.named_buffers()} - {n for n, p in D0.named_parameters()}
    assert changed and any(k.endswith("weight") for k in same)
    assert not (set(changed) & frozen)


def test_conditional_training_on_class_folders(toy_data, tmp_path):
    import shutil

    data = tmp_path / "classes"
    for i, f in enumerate(sorted(toy_data.glob("*.png"))):
        (data / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / f"class{i % 3}" / f.name)
    config = dataclasses.replace(tiny_config(data, ticks=1), cond=True)
    res = train(config, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    G = styleforge.load(res.final_snapshot).G_ema
    assert G.c_dim == 3
    z = torch.randn(2, G.z_dim)
    a = G(z, torch.eye(3)[[0, 0]], noise_mode="const")
    b = G(z, torch.eye(3)[[1, 1]], noise_mode="const")
    assert not torch.allclose(a, b)  # the label changes the image


def test_metrics_run_at_snapshots(toy_data, tmp_path):
    from styleforge.metrics import registry

    calls = []
    if "test_mean_pixel" not in registry._METRICS:

        @registry.register_metric("test_mean_pixel")
        def _mean_pixel(ctx):
            calls.append(ctx)
            img = ctx.G(torch.randn(4, ctx.G.z_dim), torch.zeros(4, 0), noise_mode="const")
            return {"mean": float(img.mean())}

    config = dataclasses.replace(tiny_config(toy_data, ticks=2), metrics=("test_mean_pixel",))
    train(config, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metric-test_mean_pixel.jsonl").read_text().splitlines()]
    assert [x["kimg"] for x in lines] == [0.008, 0.016] and all("mean" in x["results"] for x in lines)

"""The StyleGAN-XL recipe: a 16 -> 32 px ladder on the built-in digits, exact resume inside a grown stage,
2 gloo processes = 1 process, super-resolution from a stem that is gone at resume time, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

import styleforge
from styleforge.cli.main import cli
from styleforge.data import open_dataset
from styleforge.data.dataset import builtin_dataset_path
from styleforge.generation import generate_images
from styleforge.training.checkpoint import load_training_state
from styleforge.training.config import make_train_config
from styleforge.training.distributed import DistContext, init_from_env
from styleforge.training.loop import train
from styleforge.training.stylegan_xl import CLASS_EMBEDDINGS_FILE, hinge_per_sample
from styleforge.utils.errors import UserInputError
from tests.training.test_training import _free_port, _tensors

#: images of the digits subset the runs train on (40: four of every class)
SUBSET = 40
BATCH = 2


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def digits():
    return open_dataset("digits", use_labels=True, max_images=SUBSET)


@pytest.fixture(scope="module")
def digits_zip(tmp_path_factory):
    """The first SUBSET digits as a zip with their dataset.json (for the CLI)."""
    out = tmp_path_factory.mktemp("digits") / "digits40.zip"
    with zipfile.ZipFile(builtin_dataset_path("digits")) as src, zipfile.ZipFile(out, "w") as dst:
        meta = json.loads(src.read("dataset.json"))
        keep = sorted(n for n in src.namelist() if n.endswith(".png"))[:SUBSET]
        for name in keep:
            dst.writestr(name, src.read(name))
        meta["labels"] = [e for e in meta["labels"] if e[0] in set(keep)]
        dst.writestr("dataset.json", json.dumps(meta))
    return out


def xl_config(kimg_images, *, stages=(16, 32), stage_images=(BATCH,), **xl):
    cfg = make_train_config(
        "stylegan-xl-tiny", "digits", cond=True, kimg=kimg_images / 1000, batch=xl.pop("batch", BATCH),
        batch_gpu=xl.pop("batch_gpu", None), tick=BATCH / 1000, snap=0, image_snap=0,
        loss_overrides=xl.pop("loss_overrides", {}),
        xl_options=dict(stages=stages, kimg_per_stage=tuple(n / 1000 for n in stage_images) if len(stages) > 1
                        else (), **{"pl_start_kimg": 0.0, **xl}))
    return dataclasses.replace(cfg, grid_size=10)


def test_hinge_reductions():
    logits = torch.tensor([[1.0, 3.0, 10.0], [0.0, 2.0, 4.0]])
    # official: per sample, the mean of each feature network's logits, summed over the networks
    assert torch.equal(hinge_per_sample(logits, [2, 1], "official"), torch.tensor([12.0, 5.0]))
    assert torch.allclose(hinge_per_sample(logits, [2, 1], "mean"), torch.tensor([14 / 3, 2.0]))


def test_two_stage_run_on_digits(digits, tmp_path):
    # 1 minibatch at 16 px, then 1 at 32 px; path length from the start so that Greg runs (minibatch 0).
    res = train(xl_config(2 * BATCH), dataset=digits, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    run = tmp_path / "run"
    assert res.cur_nimg == 2 * BATCH
    records = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["resolution"] for r in records] == [16, 32]
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss/"))
    assert "loss/pl_penalty" in records[0] and "loss/pl_penalty" not in records[1]  # none in superres
    assert (run / "fakes_stage0-16px.png").is_file()
    state = load_training_state(run)
    assert state["xl_stage"] == 1 and state["xl_stage_starts"] == [0, BATCH]
    # The class embeddings start from the per-class EfficientNet-lite0 means, saved in the run.
    table = np.load(run / CLASS_EMBEDDINGS_FILE)
    assert table.shape == (10, 320) and np.abs(table).sum() > 0
    assert torch.equal(state["xl_class_embeddings"], torch.from_numpy(table))
    # Stage 1 trained only the new head (and synthesis.input): the mapping and kept layers equal the stem's.
    stem = state["xl_stem"]
    layers = 1 + max(int(k.split(".")[2]) for k in state["G"] if k.startswith("synthesis.layers."))
    kept = layers - (4 + 1)  # the tiny preset's 4 head layers and a ToRGB are new
    frozen = [k for k in stem if (k.startswith("mapping.") and "w_avg" not in k) or (
        k.startswith("synthesis.layers.") and int(k.split(".")[2]) < kept and "magnitude" not in k)]
    assert len(frozen) > 10 and all(torch.equal(state["G"][k], stem[k]) for k in frozen)
    assert not torch.equal(state["G"]["mapping.w_avg"], stem["mapping.w_avg"])  # still tracked
    assert not torch.equal(state["G"]["synthesis.input.affine.weight"], stem["synthesis.input.affine.weight"])
    # The snapshot loads and generates per class at 32 px.
    G = styleforge.load(res.final_snapshot).generator
    assert G.img_resolution == 32
    a, b = generate_images(G, [0, 1], class_idx=3), generate_images(G, [0, 1], class_idx=7)
    assert a.shape == (2, 3, 32, 32) and not torch.equal(a, b)


def test_exact_resume_inside_a_grown_stage(digits, tmp_path):
    # 1 minibatch at 16 px, then 2 at 32 px; the second run stops after the first 32 px minibatch.
    kw = dict(class_embedding="random")
    train(xl_config(3 * BATCH, **kw), dataset=digits, run_dir=tmp_path / "a", device="cpu", log=_quiet)
    train(xl_config(2 * BATCH, **kw), dataset=digits, run_dir=tmp_path / "b", device="cpu", log=_quiet)
    assert load_training_state(tmp_path / "b")["xl_stage"] == 1
    res = train(xl_config(3 * BATCH, **kw), dataset=digits, resume=str(tmp_path / "b"), device="cpu", log=_quiet)
    assert res.cur_nimg == 3 * BATCH
    ta, tb = _tensors(load_training_state(tmp_path / "a")), _tensors(load_training_state(tmp_path / "b"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"


def _worker(rank: int, world: int, port: int, config, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    ds = open_dataset("digits", use_labels=True, max_images=SUBSET)
    ctx = init_from_env("cpu")
    try:
        train(config, dataset=ds, run_dir=run_dir, dist_ctx=ctx, log=_quiet)
    finally:
        ctx.shutdown()


def test_two_processes_equal_one_process(digits, tmp_path):
    # Global batch 4 in chunks of 2: one process does 2 rounds, two processes 1 round each; 1 minibatch at 16 px
    # with the path length (its process-independent pl_mean update).
    config = xl_config(4, stages=(16,), batch=4, batch_gpu=2, class_embedding="random",
                       loss_overrides=dict(pl_interval=2, pl_mean_update="after_minibatch"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, dataset=digits, run_dir=tmp_path / "one", dist_ctx=DistContext(), log=_quiet)
    finally:
        torch.set_num_threads(threads)
    mp.start_processes(_worker, args=(2, _free_port(), config, str(tmp_path / "two")), nprocs=2, join=True,
                       start_method="spawn")
    s1, s2 = load_training_state(tmp_path / "one"), load_training_state(tmp_path / "two")
    assert s2["world_size"] == 2 and s1["cur_nimg"] == s2["cur_nimg"] == 4
    t1, t2 = _tensors(s1), _tensors(s2)
    # BatchNorm running statistics of D are each process's own (never used in training); w_avg is merged to
    # first order in its EMA rate.
    running = ("running_mean", "running_var", "num_batches_tracked")
    compared = [k for k in t1 if not k.endswith(running)]
    for k in compared:
        atol = 1e-4 if k.endswith("w_avg") else 0
        torch.testing.assert_close(t2[k], t1[k], rtol=0, atol=atol, msg=f"{k} differs")


def test_superres_cli_from_a_stem_that_is_gone_at_resume(digits_zip, tmp_path):
    runner = CliRunner()
    common = ["--cfg", "stylegan-xl-tiny", "--data", str(digits_zip), "--cond", "--batch", str(BATCH), "--tick",
              str(BATCH / 1000), "--snap", "0", "--class-embedding", "random"]
    one, two = str(BATCH / 1000), str(2 * BATCH / 1000)
    out = runner.invoke(cli, ["train", *common, "--kimg", one, "--outdir", str(tmp_path / "stem")])
    assert out.exit_code == 0, out.output
    stem_run = next((tmp_path / "stem").iterdir())
    sr = ["--superres", "--path-stem", str(stem_run), "--head-layers", "4", "--cls-weight", "0.5"]
    out = runner.invoke(cli, ["train", *common, *sr, "--kimg", one, "--outdir", str(tmp_path / "sr")])
    assert out.exit_code == 0, out.output
    run = next((tmp_path / "sr").iterdir())
    config = json.loads((run / "config.json").read_text())["train"]["xl"]
    assert config["stages"] == [32] and config["stem_network"]["config"]["img_resolution"] == 16
    # classifier guidance (EfficientNet-lite0 ImageNet classifier) in G's loss from the first superres stage
    record = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["loss/guidance"]) and record["loss/guidance"] > 0
    stem_run.rename(tmp_path / "moved")  # resume needs neither the stem file nor its path
    out = runner.invoke(cli, ["train", "--resume", str(run), "--kimg", two])
    assert out.exit_code == 0, out.output
    assert load_training_state(run)["cur_nimg"] == 2 * BATCH
    out = runner.invoke(cli, ["generate", "--network", str(run), "--seeds", "0-3", "--class", "5", "--grid",
                              "--outdir", str(tmp_path / "img")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "img" / "grid.png").is_file()
    # Options of other configurations are refused with the reason.
    out = runner.invoke(cli, ["train", *common, "--gamma", "1", "--dry-run"])
    assert out.exit_code != 0 and "--gamma" in out.output
    out = runner.invoke(cli, ["train", *common, "--superres", "--dry-run"])
    assert out.exit_code != 0 and "--path-stem" in out.output


def test_a_ladder_needs_stage_lengths(digits):
    with pytest.raises(UserInputError, match="kimg-per-stage"):
        make_train_config("stylegan-xl-tiny", "digits", xl_options=dict(stages=(16, 32)))
    with pytest.raises(UserInputError, match="multiply"):
        make_train_config("stylegan-xl-tiny", "digits", xl_options=dict(stages=(16, 24), kimg_per_stage=(1,)))
    with pytest.raises(UserInputError, match="metrics"):
        make_train_config("stylegan-xl-tiny", "digits", xl_options=dict(stages=(16, 32), advance_on_plateau=True))


def test_advance_on_plateau_with_a_patched_metric(digits, tmp_path, monkeypatch):
    # The metric improves at the first snapshot and not at the second: the next minibatch ends stage 0.
    values = iter([5.0, 6.0, 7.0, 8.0])
    import styleforge.metrics.registry as registry

    monkeypatch.setattr(registry, "compute_metric", lambda name, ctx: {name: next(values)})
    cfg = make_train_config(
        "stylegan-xl-tiny", "digits", cond=True, kimg=4 * BATCH / 1000, batch=BATCH, tick=BATCH / 1000, snap=1,
        image_snap=0, metrics=("fid50k_full",),
        xl_options=dict(stages=(16, 32), advance_on_plateau=True, class_embedding="random"))
    train(dataclasses.replace(cfg, grid_size=4), dataset=digits, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    state = load_training_state(tmp_path / "run")
    assert state["xl_stage_starts"] == [0, 3 * BATCH]
    records = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [r["resolution"] for r in records] == [16, 16, 16, 32]


def test_d_feature_res_on_the_tiny_preset_uses_the_pretrained_features(digits):
    """--cfg stylegan-xl-tiny keeps its random test backbone, but --d-feature-res N means the pretrained
    EfficientNet-lite0 at N px (it once kept the random one without a word)."""
    from types import SimpleNamespace

    from styleforge.feature_nets.efficientnet_lite import load_efficientnet_lite0
    from styleforge.training.stylegan_xl import StyleGANXLRecipe
    from tests.feature_nets.test_efficientnet_lite import _package_weights_or_skip

    _package_weights_or_skip()
    pretrained = load_efficientnet_lite0().state_dict()

    def backbone_matches(xl):
        host = SimpleNamespace(xl=xl, ds=digits, _notes=[])
        D = StyleGANXLRecipe._make_D(host, 16, seed=0)
        sd = D.state_dict()
        prefix = "features.efficientnet_lite0.backbone."
        same = [torch.equal(sd[prefix + k], v) for k, v in pretrained.items() if prefix + k in sd]
        assert len(same) > 200  # the whole backbone is there under that prefix
        return D.config.tiny, all(same)

    tiny = xl_config(BATCH).xl
    assert tiny.d_tiny and backbone_matches(tiny) == (True, False)
    assert backbone_matches(dataclasses.replace(tiny, d_feature_resolution=64)) == (False, True)


def test_multi_label_and_continuous_labels_are_refused_with_the_fix(digits_zip, tmp_path):
    """The XL mapping embeds argmax c: labels that are not one class per image are refused, not silently reduced."""
    for kind, label in (("multi-label", lambda k: [k, (k + 1) % 10]), ("continuous", lambda k: [k / 10, 0.5])):
        dest = tmp_path / f"{kind}.zip"
        with zipfile.ZipFile(digits_zip) as src, zipfile.ZipFile(dest, "w") as dst:
            meta = json.loads(src.read("dataset.json"))
            for name in src.namelist():
                if name.endswith(".png"):
                    dst.writestr(name, src.read(name))
            meta["labels"] = [[name, label(int(k))] for name, k in meta["labels"]]
            dst.writestr("dataset.json", json.dumps(meta))
        cfg = make_train_config("stylegan-xl-tiny", str(dest), cond=True, kimg=BATCH / 1000, batch=BATCH)
        with pytest.raises(UserInputError, match=f"one class per image.*are {kind}.*stylegan2"):
            train(cfg, run_dir=tmp_path / kind, device="cpu", log=_quiet)


def test_kimg_per_stage_changes_on_resume_for_stages_that_have_not_ended(digits_zip, tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["train", "--cfg", "stylegan-xl-tiny", "--data", str(digits_zip), "--cond", "--batch",
                              str(BATCH), "--tick", str(BATCH / 1000), "--snap", "0", "--class-embedding", "random",
                              "--stages", "16,32", "--kimg-per-stage", str(4 * BATCH / 1000), "--kimg",
                              str(BATCH / 1000), "--outdir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    run = next(tmp_path.iterdir())
    # The stem was to train 4 minibatches; shortened to 1 on resume, it ends at once and stage 1 begins.
    out = runner.invoke(cli, ["train", "--resume", str(run), "--kimg-per-stage", str(BATCH / 1000), "--kimg",
                              str(3 * BATCH / 1000)])
    assert out.exit_code == 0, out.output
    state = load_training_state(run)
    assert state["cur_nimg"] == 3 * BATCH and state["xl_stage"] == 1 and state["xl_stage_starts"] == [0, BATCH]
    assert json.loads((run / "config.json").read_text())["train"]["xl"]["kimg_per_stage"] == [BATCH / 1000]
    assert "changed on resume: --kimg-per-stage [0.008] -> [0.002]" in (run / "log.txt").read_text()
    # Stage 0 has ended: its length can no longer change. Nor can what the stages grow from.
    out = runner.invoke(cli, ["train", "--resume", str(run), "--kimg-per-stage", str(2 * BATCH / 1000)])
    assert out.exit_code != 0 and "stage 0" in out.output and "ended" in out.output
    out = runner.invoke(cli, ["train", "--resume", str(run), "--head-layers", "2"])
    assert out.exit_code != 0 and "--head-layers cannot change on resume" in out.output
    out = runner.invoke(cli, ["train", "--resume", str(run), "--cls-weight", "1"])  # changes the run: by name only
    assert out.exit_code != 0 and "--allow-change cls-weight" in out.output


def test_kimg_per_stage_on_resume_moves_the_run_length_with_it():
    from styleforge.training.config import apply_flags

    cfg = make_train_config("stylegan-xl-tiny", "digits", kimg=30, xl_options=dict(stages=(16, 32, 64),
                                                                                     kimg_per_stage=(10, 12)))
    longer = apply_flags(cfg, {"kimg_per_stage": "16,12"})
    assert longer.xl.kimg_per_stage == (16.0, 12.0) and longer.kimg == 36  # the last stage keeps its 8 kimg
    assert apply_flags(cfg, {"kimg_per_stage": "16,12", "kimg": 31}).kimg == 31  # unless --kimg is given
    early = dataclasses.replace(cfg, kimg=5)  # a run planned to stop inside the stem keeps its length
    assert apply_flags(early, {"kimg_per_stage": "16"}).kimg == 5
    with pytest.raises(UserInputError, match="StyleGAN-XL option"):
        apply_flags(make_train_config("stylegan2-tiny", "digits"), {"kimg_per_stage": "4"})


def test_centered_class_means():
    from styleforge.training.stylegan_xl import centered_class_means

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(1, 320)) * 5  # the part every class has
    means = (shared + rng.normal(size=(3, 320)) * 0.1).astype(np.float32)
    means = np.concatenate([means, np.zeros((1, 320), np.float32)])  # a class without images
    table = centered_class_means(means, [10, 30, 60, 0])
    assert np.allclose(np.array([10, 30, 60]) @ table[:3], 0, atol=1e-3)  # the dataset mean is gone
    assert np.isclose(table[:3].std(), 1.0, atol=1e-5) and not table[3].any()
    cos = table[0] @ table[1] / np.linalg.norm(table[0]) / np.linalg.norm(table[1])
    assert abs(cos) < 0.7  # the raw means are ~0.99 alike


def test_lite0_centered_class_embeddings_are_saved_and_used(digits, tmp_path):
    from styleforge.training.stylegan_xl import centered_class_means, class_mean_features

    cfg = xl_config(BATCH, stages=(16,), class_embedding="lite0-centered")
    train(cfg, dataset=digits, run_dir=tmp_path / "run", device="cpu", log=_quiet)
    table = np.load(tmp_path / "run" / CLASS_EMBEDDINGS_FILE)
    means, counts = class_mean_features(digits, torch.device("cpu"), cfg.xl.embedding_resolution)
    np.testing.assert_allclose(table, centered_class_means(means, counts), atol=1e-5)
    assert np.isclose(table.std(), 1.0, atol=1e-4)
    assert "centred per-class mean" in (tmp_path / "run" / "log.txt").read_text()

"""Issue 17 end to end on tiny configs: non-square datasets and training (StyleGAN2, StyleGAN3-T), multi-label and
continuous labels, ``--batch-gpu auto`` on a CPU with a memory cap, one halving on out-of-memory."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from styleforge.cli.dataset import command as dataset_command
from styleforge.cli.generate import command as generate_command
from styleforge.data import open_dataset
from styleforge.generation import generate_images
from styleforge.loading import load
from styleforge.models.base import image_size
from styleforge.training import memory_fit
from styleforge.training.checkpoint import load_training_state
from styleforge.training.loop import train
from styleforge.utils.errors import UserInputError
from tests.training.conftest import tiny_config

NUM = 8


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def wide_folder(tmp_path_factory):
    """8 RGB 40x30 images (a coloured bar on a background) in two class sub-folders."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    for i in range(NUM):
        img = np.empty((30, 40, 3), dtype=np.uint8)
        img[:] = rng.integers(0, 256, 3)
        y = int(rng.integers(4, 22))
        img[y : y + 6, 5:35] = rng.integers(0, 256, 3)
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / f"c{i % 2}" / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def wide_zip(wide_folder, tmp_path_factory):
    dest = tmp_path_factory.mktemp("zips") / "wide.zip"
    r = CliRunner().invoke(dataset_command, ["--source", str(wide_folder), "--dest", str(dest),
                                             "--resolution", "32x24"])
    assert r.exit_code == 0, r.output
    assert "32x24x3" in r.output
    return dest


def _with_labels(src_zip, dest, labels):
    """A copy of ``src_zip`` whose dataset.json holds ``labels`` (one per image, in name order)."""
    with zipfile.ZipFile(src_zip) as zin, zipfile.ZipFile(dest, "w") as zout:
        names = sorted(n for n in zin.namelist() if n.endswith(".png"))
        for n in names:
            zout.writestr(n, zin.read(n))
        zout.writestr("dataset.json", json.dumps({"labels": [[n, v] for n, v in zip(names, labels, strict=True)]}))
    return dest


def test_dataset_tool_keeps_the_aspect_ratio_by_crop_or_pad(wide_folder, wide_zip, tmp_path):
    ds = open_dataset(wide_zip, use_labels=True)
    assert ds.image_shape == (3, 24, 32) and ds.img_aspect == (4, 3) and ds.resolution == 32
    assert ds[0][0].shape == (3, 24, 32) and ds.label_encoding == "class" and ds.label_dim == 2
    # 3:4 from 4:3 sources: crop keeps the centre columns, pad adds borders of the pad colour (black)
    for transform in ("center-crop", "pad"):
        dest = tmp_path / f"tall-{transform}.zip"
        r = CliRunner().invoke(dataset_command, ["--source", str(wide_folder), "--dest", str(dest),
                                                 "--resolution", "24x32", "--transform", transform])
        assert r.exit_code == 0, r.output
        img = open_dataset(dest)[0][0]
        assert img.shape == (3, 32, 24)
        top_row_black = bool((img[:, 0] == 0).all())
        assert top_row_black == (transform == "pad")
    r = CliRunner().invoke(dataset_command, ["--source", str(wide_folder), "--dest", str(tmp_path / "x.zip"),
                                             "--resolution", "32x24", "--transform", "center-crop-wide"])
    assert r.exit_code != 0 and "square canvas" in r.output
    # a folder of non-square images still needs an explicit size; (W, H) crops to that ratio while loading
    with pytest.raises(UserInputError, match="WxH"):
        open_dataset(wide_folder)
    assert open_dataset(wide_folder, resolution=(16, 32)).image_shape == (3, 32, 16)


@pytest.mark.parametrize("cfg", ["stylegan2-tiny", "stylegan3-t-tiny"])
def test_training_a_non_square_generator(wide_zip, tmp_path, cfg):
    run = train(tiny_config(wide_zip, cfg=cfg, ticks=2), run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert run.cur_nimg == 16
    loaded = load(run.final_snapshot)
    assert image_size(loaded.generator) == (32, 24) and tuple(loaded.generator.config.img_aspect) == (4, 3)
    imgs = generate_images(loaded.generator, [0, 1])
    assert imgs.shape == (2, 3, 24, 32) and torch.isfinite(imgs).all()
    grid = np.asarray(Image.open(run.final_snapshot.parent / "fakes000000.png"))
    assert grid.shape[:2] == (24, 8 * 32)  # 8 images of 32x24 in one row
    assert float(grid.std()) > 1.0  # not a constant image


def test_multi_label_and_continuous_conditioning(wide_zip, tmp_path):
    multi = _with_labels(wide_zip, tmp_path / "multi.zip", [[0, 2], [1], [2], [0, 1, 2], [1], [0], [2, 1], [0]])
    ds = open_dataset(multi, use_labels=True)
    assert ds.label_encoding == "multi-label" and ds.label_dim == 3
    assert ds.get_label(0).tolist() == [1, 0, 1]
    cfg = dataclasses.replace(tiny_config(multi, ticks=1), cond=True)
    run = train(cfg, run_dir=tmp_path / "multi-run", device="cpu", log=_quiet)
    G = load(run.final_snapshot).generator
    assert G.config.cond_encoding == "multi-label" and G.c_dim == 3
    both = generate_images(G, [0], class_idx=[0, 2])
    assert torch.equal(both, generate_images(G, [0], cond_vector=[1, 0, 1]))
    assert not torch.equal(both, generate_images(G, [0], class_idx=[0]))
    out = tmp_path / "gen"
    r = CliRunner().invoke(generate_command, ["--network", str(run.final_snapshot), "--seeds", "0-1", "--class",
                                              "0,2", "--outdir", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert Image.open(out / "seed0000.png").size == (32, 24)

    cont = _with_labels(wide_zip, tmp_path / "cont.zip", [[0.1 * i, 1.0 - 0.1 * i] for i in range(NUM)])
    ds = open_dataset(cont, use_labels=True)
    assert ds.label_encoding == "continuous" and ds.get_label(3) == pytest.approx([0.3, 0.7])
    # forcing: --cond continuous reads integer lists as numbers, --cond multi-label single ints as one class
    forced = open_dataset(_with_labels(wide_zip, tmp_path / "ints.zip", [[1, 0]] * NUM), use_labels="continuous")
    assert forced.label_encoding == "continuous" and forced.get_label(0).tolist() == [1, 0]
    cfg = dataclasses.replace(tiny_config(cont, cfg="stylegan3-t-tiny", ticks=1), cond=True)
    run = train(cfg, run_dir=tmp_path / "cont-run", device="cpu", log=_quiet)
    G = load(run.final_snapshot).generator
    assert G.config.cond_encoding == "continuous" and G.c_dim == 2
    r = CliRunner().invoke(generate_command, ["--network", str(run.final_snapshot), "--seeds", "0",
                                              "--cond-vector", "0.2,0.9", "--outdir", str(tmp_path / "g2"),
                                              "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(generate_command, ["--network", str(run.final_snapshot), "--seeds", "0", "--class", "1",
                                              "--outdir", str(tmp_path / "g3"), "--device", "cpu"])
    assert r.exit_code != 0 and "--cond-vector with 2" in r.output


def test_mixed_and_ragged_label_files_are_named_with_the_fix(wide_zip, tmp_path):
    mixed = _with_labels(wide_zip, tmp_path / "mixed.zip", [0, [1, 2], 1, 0, 1, 0, 1, 0])
    with pytest.raises(UserInputError) as e:
        open_dataset(mixed, use_labels=True)
    msg = str(e.value)
    assert "mixed.zip/dataset.json" in msg and "00000/img00000001.png" in msg and "--cond multi-label" in msg
    assert open_dataset(mixed, use_labels="multi-label").label_dim == 3  # the fix the message gives works
    ragged = _with_labels(wide_zip, tmp_path / "ragged.zip", [[0.5, 0.5]] * 6 + [[0.5], [0.1, 0.2, 0.3]])
    with pytest.raises(UserInputError, match=r"same length; most have 2.*img00000006.*img00000007"):
        open_dataset(ragged, use_labels=True)
    with pytest.raises(UserInputError, match="one integer class per image"):
        open_dataset(ragged, use_labels="class")


def test_batch_gpu_auto_on_cpu_respects_the_memory_cap(wide_zip, tmp_path, monkeypatch):
    lines = []
    cfg = dataclasses.replace(tiny_config(wide_zip, ticks=1, batch=8), batch_gpu="auto", mem_share=0.5)
    monkeypatch.setattr(memory_fit, "available_memory_bytes", lambda: 1 << 40)  # plenty
    run = train(cfg, run_dir=tmp_path / "big", device="cpu", log=lines.append)
    assert load_training_state(run.run_dir)["config"]["batch_gpu"] == 8
    assert any(line.startswith("--batch-gpu auto: 8 images") for line in lines)
    assert json.loads((run.run_dir / "config.json").read_text())["train"]["batch_gpu"] == "auto"
    lines.clear()
    monkeypatch.setattr(memory_fit, "available_memory_bytes", lambda: 0)  # no room above the current RSS
    from styleforge.training.distributed import DistContext
    from styleforge.training.stylegan import StyleGANRecipe

    ds = open_dataset(wide_zip)
    recipe = StyleGANRecipe(cfg, ds, torch.device("cpu"))
    before = {k: v.clone() for k, v in recipe.G.state_dict().items()}
    chosen = memory_fit.resolve_batch_gpu(cfg, recipe, ds, DistContext(device=torch.device("cpu")), lines.append)
    assert chosen.batch_gpu == 2  # the smallest (the path-length regulariser needs 2)
    assert any("even the smallest batch exceeds it" in line for line in lines)
    after = recipe.G.state_dict()  # probing left the networks (and their EMAs) as they were
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_choose_batch_gpu_follows_the_linear_model():
    peaks = {b: 100 + 10 * b for b in (1, 2, 4, 8, 16, 32)}
    probed = []

    def measure(b):
        probed.append(b)
        return memory_fit.ProbeResult(b, peaks[b], peaks[b] <= 300)

    choice, _ = memory_fit.choose_batch_gpu([1, 2, 4, 8, 16, 32], measure, 300)
    assert choice == 16 and probed == [1, 2, 16]  # two small probes, then the predicted largest


def test_out_of_memory_halves_batch_gpu_once_and_continues(wide_zip, tmp_path, monkeypatch):
    from styleforge.training.stylegan import StyleGANRecipe

    real = StyleGANRecipe.accumulate
    raised = []

    def flaky(self, loss, chunk, mb, gain):
        if loss == "Dmain" and mb.batch_gpu == 4 and not raised:
            raised.append(mb.index)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (patched)")
        return real(self, loss, chunk, mb, gain)

    monkeypatch.setattr(StyleGANRecipe, "accumulate", flaky)
    lines = []
    run = train(tiny_config(wide_zip, ticks=1), run_dir=tmp_path / "run", device="cpu", log=lines.append)
    assert raised and run.cur_nimg == 8
    assert any("out of memory in phase Dmain" in line and "halving it to 2" in line for line in lines)
    assert load_training_state(run.run_dir)["config"]["batch_gpu"] == 2

    def always(self, loss, chunk, mb, gain):
        raise torch.OutOfMemoryError("CUDA out of memory (patched)")

    monkeypatch.setattr(StyleGANRecipe, "accumulate", always)
    with pytest.raises(UserInputError, match="after halving once already"):
        train(tiny_config(wide_zip, ticks=1), run_dir=tmp_path / "run2", device="cpu", log=_quiet)


def test_train_cli_flags_resolution_wxh_cond_encoding_batch_gpu_auto(wide_folder, tmp_path):
    from styleforge.cli.train import command as train_command

    r = CliRunner().invoke(train_command, ["--cfg", "stylegan2-tiny", "--data", str(wide_folder), "--resolution",
                                           "16x12", "--cond", "multi-label", "--batch-gpu", "auto", "--mem-share",
                                           "0.9", "--batch", "4", "--kimg", "0.004", "--tick", "0.004",
                                           "--outdir", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "--batch-gpu auto:" in r.output and "16x12x3" in r.output
    G = load(next(tmp_path.glob("*/network-snapshot-*"))).generator
    assert image_size(G) == (16, 12) and G.config.cond_encoding == "multi-label" and G.c_dim == 2
    r = CliRunner().invoke(train_command, ["--cfg", "stylegan2-tiny", "--data", str(wide_folder), "--batch-gpu",
                                           "many", "--dry-run"])
    assert r.exit_code != 0 and "'auto'" in r.output


def test_square_only_networks_refuse_non_square_or_list_labels(wide_zip):
    import dataclasses as dc

    from styleforge.models.registry import get_preset
    from styleforge.training.stylegan import data_shape_overrides

    ds = open_dataset(wide_zip)
    fields = {f.name for f in dc.fields(get_preset("pggan-tiny").G_config)}
    with pytest.raises(UserInputError, match="makes square images only"):
        data_shape_overrides("pggan", "G", fields, ds)
    assert data_shape_overrides("stylegan2", "G", {"img_aspect", "cond_encoding"}, ds) == {"img_aspect": (4, 3)}


def test_integer_vectors_with_repeats_are_read_as_numbers():
    from styleforge.data.labels import detect_encoding

    names = ["a.png", "b.png"]
    assert detect_encoding([[3, 7], [1]], names, "x/dataset.json") == "multi-label"
    # [0, 1, 0] cannot be a set of classes: it is a multi-hot vector written with integers (official: numbers)
    assert detect_encoding([[0, 1, 0], [1, 0, 1]], names, "x/dataset.json") == "continuous"


def test_batch_gpu_auto_cuda_bookkeeping_with_simulated_memory(monkeypatch):
    """The CUDA branch of the probe on a machine without a GPU: torch.cuda's memory queries are replaced by a
    simulated device (64 GiB free, 5 GiB per image, out of memory above 48 GiB), so the budget arithmetic, the
    peak reading, the OOM-means-no rule and the choice are exercised; tests/gpu runs the real thing."""
    gib = 2**30
    dev = torch.device("cuda", 0)
    sim = {"peak": 0, "allocated": 1 * gib, "emptied": 0, "reset": 0}

    def probe_step(recipe, ds, batch, batch_gpu, world, device):
        assert device == dev and sim["peak"] == 0  # the peak was reset before the probe
        if batch_gpu * 5 * gib > 48 * gib:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        sim["peak"] = sim["allocated"] + batch_gpu * 5 * gib

    def reset(device):
        sim["peak"], sim["reset"] = 0, sim["reset"] + 1

    monkeypatch.setattr(memory_fit, "_probe_step", probe_step)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: sim["peak"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: sim["allocated"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: sim.__setitem__("emptied", sim["emptied"] + 1))

    budget, how = memory_fit._budget(dev, mem_share=0.5)  # mem_share is the CPU rule; CUDA keeps a 10% margin
    assert budget == 1 * gib + int(64 * gib * (1 - memory_fit.CUDA_MARGIN)) and "GiB free" in how

    class Nets:
        G, D = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)

    def measure(b):
        return memory_fit._measure(Nets, None, 64, b, 1, dev, budget)

    oom = measure(16)  # 80 GiB wanted: out of memory, reported as "does not fit", the cache emptied
    assert (oom.peak, oom.fits, sim["emptied"]) == (None, False, 1)
    assert measure(8) == memory_fit.ProbeResult(8, 41 * gib, True)
    choice, probes = memory_fit.choose_batch_gpu(memory_fit.batch_candidates(64, 1), measure, budget)
    # 1 GiB + 5 GiB/image within 58.6 GiB: 11 would fit, 8 is the largest candidate dividing the batch
    assert choice == 8 and all(p.fits == (p.peak is not None and p.peak <= budget) for p in probes)
    assert sim["reset"] >= len(probes)

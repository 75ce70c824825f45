"""The inversion commands end to end on tiny networks: project (+ PTI, --class), generate --projected-w,
directions, edit, style-mix, attribute."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import styleforge
from styleforge.cli.main import cli
from styleforge.feature_nets.efficientnet_lite import EfficientNetLite0
from styleforge.loading import save
from styleforge.utils.images import save_png, to_uint8
from styleforge.utils.seeding import z_from_seed
from tests.feature_nets.test_efficientnet_lite import _package_state
from tests.inversion.conftest import make_tiny_generator


def _run(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inv")
    G = make_tiny_generator(1)
    net = save(root / "net", G_ema=G)
    torch.manual_seed(0)
    lite0 = root / "lite0.pth"
    torch.save(_package_state(EfficientNetLite0()), lite0)
    targets = root / "targets"
    targets.mkdir()
    with torch.no_grad():
        img = G(torch.cat([z_from_seed(s, G.z_dim) for s in (3, 4)]), None, noise_mode="const")
    save_png(targets / "a.png", to_uint8(img[:1])[0])
    rgba = np.concatenate([to_uint8(img[1:])[0], np.full((16, 16, 1), 255, np.uint8)], axis=2)
    Image.fromarray(np.kron(rgba, np.ones((3, 2, 1), np.uint8))).save(targets / "b.png")  # 48x32 RGBA: crop+resize
    return root, G, net, lite0, targets


def test_project_folder_with_pti_and_generate(setup):
    root, G, net, lite0, targets = setup
    out = root / "proj"
    res = _run("project", "--network", str(net), "--target", str(targets), "--steps", "10", "--space", "w+",
               "--w-avg-samples", "200", "--distance", "lite0", "--lite0", str(lite0), "--pti-steps", "4",
               "--pti-stop", "0", "--outdir", str(out), "--device", "cpu")
    assert "Distance: EfficientNet-lite0" in res.output and "PSNR" in res.output
    for name in ("a", "b"):
        d = out / name
        for f in ("target.png", "proj.png", "projected_w.npz", "result.json", "pti_before.png", "pti_after.png"):
            assert (d / f).is_file(), f
        assert (d / "proj.mp4").is_file() or (d / "proj.gif").is_file()
        w = np.load(d / "projected_w.npz")["w"]
        assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32
        info = json.loads((d / "result.json").read_text())
        assert info["pti"]["steps"] == 4 and info["distance_name"] == "lite0"
        assert np.asarray(Image.open(d / "target.png")).shape == (16, 16, 3)
        # the tuned generator is our format and renders the PTI reconstruction from projected_w.npz
        gen = root / f"gen_{name}"
        _run("generate", "--network", str(d / "G_pti"), "--projected-w", str(d / "projected_w.npz"),
             "--outdir", str(gen), "--device", "cpu")
        assert np.array_equal(np.asarray(Image.open(gen / "proj.png")), np.asarray(Image.open(d / "pti_after.png")))
    assert styleforge.load(out / "a" / "G_pti").G_ema is not None


def test_project_single_file_class_auto(setup, tmp_path):
    root, _, _, lite0, targets = setup
    from tests.convert.test_official_stylegan2 import make_networks

    G, _ = make_networks()
    net = save(tmp_path / "cond", G_ema=G)
    img = Image.open(targets / "a.png").resize((G.img_resolution, G.img_resolution))
    img.save(tmp_path / "t.png")
    res = _run("project", "--network", str(net), "--target", str(tmp_path / "t.png"), "--steps", "3",
               "--w-avg-samples", "50", "--class", "auto", "--distance", "lite0", "--lite0", str(lite0),
               "--no-save-video", "--outdir", str(tmp_path / "o"), "--device", "cpu")
    info = json.loads((tmp_path / "o" / "result.json").read_text())
    assert len(info["candidates"]) == min(5, G.c_dim)
    assert str(info["class_idx"]) == min(info["candidates"].items(), key=lambda kv: kv[1])[0]  # JSON keys: str
    assert float(info["distance"]) == pytest.approx(min(info["candidates"].values()))
    assert "class" in res.output
    bad = CliRunner().invoke(cli, ["project", "--network", str(net), "--target", str(tmp_path / "t.png"),
                                   "--lite0", str(lite0), "--outdir", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "conditional" in bad.output
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nope")
    bad = CliRunner().invoke(cli, ["project", "--network", str(net), "--target", str(tmp_path / "broken.png"),
                                   "--class", "0", "--lite0", str(lite0), "--outdir", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "Cannot read the target" in bad.output


def test_directions_edit_style_mix(setup):
    root, G, net, _, _ = setup
    _run("directions", "--network", str(net), "--method", "sefa", "--num", "4", "--out", str(root / "sefa.npz"))
    _run("directions", "--network", str(net), "--method", "ganspace", "--num", "4", "--samples", "2000",
         "--out", str(root / "gs.npz"))
    labels = root / "labels.txt"
    w = styleforge.inversion.editing.ws_from_seeds(G, range(200))[:, 0]
    lab = (w[:, 0] > w[:, 0].median()).int().tolist()
    labels.write_text("# seed,label\n" + "".join(f"{s},{y}\n" for s, y in enumerate(lab)))
    _run("directions", "--network", str(net), "--method", "boundary", "--labels", str(labels),
         "--out", str(root / "b.npz"))
    b = np.load(root / "b.npz")
    assert b["directions"].shape == (1, G.w_dim) and str(b["method"]) == "boundary"
    assert b["directions"][0, 0] > 0.3 and b["values"][0] > 0.8  # labels split w[0]: the normal leans along +axis 0
    out = root / "edit"
    _run("edit", "--network", str(net), "--seeds", "0-1", "--directions", str(root / "sefa.npz"), "--index", "1",
         "--strength", "-2:2:5", "--layers", "0-3", "--video", "--outdir", str(out))
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (32, 80, 3) and (out / "strip_01.png").is_file()
    strip = np.asarray(Image.open(out / "strip_00.png"))
    plain = to_uint8(G.synthesis(styleforge.inversion.editing.ws_from_seeds(G, [0]), noise_mode="const"))[0]
    assert np.array_equal(strip[:, 32:48], plain)  # the middle column is strength 0
    assert (out / "edit.mp4").is_file() or (out / "edit.gif").is_file()
    _run("style-mix", "--network", str(net), "--rows", "1,2", "--cols", "3,4,5", "--styles", "0-2",
         "--outdir", str(root / "mix"))
    assert np.asarray(Image.open(root / "mix" / "grid.png")).shape == (48, 64, 3)


def test_attribute_writes_histogram(setup):
    root, _, net, lite0, targets = setup
    out = root / "attr"
    res = _run("attribute", "--network", str(net), "--images", str(targets), "--generated-seeds", "0-1",
               "--steps", "5", "--distance", "lite0", "--lite0", str(lite0), "--outdir", str(out), "--device", "cpu")
    data = json.loads((out / "distances.json").read_text())
    assert set(data["groups"]) == {"images", "generated"} and len(data["groups"]["generated"]) == 2
    assert np.asarray(Image.open(out / "histogram.png")).ndim == 3
    assert "mean PSNR" in res.output

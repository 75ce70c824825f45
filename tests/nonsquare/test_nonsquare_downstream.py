"""The main path of every downstream tool on a tiny non-square (32x24) generator: generate grids, video, spectrum,
projection, the explorer, export, the FID feature path, EQ-T."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from styleforge.cli.main import cli
from styleforge.loading import save
from styleforge.metrics import equivariance as eq
from styleforge.models.registry import create_model

W, H = 32, 24


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A saved random-init 32x24 StyleGAN2 and StyleGAN3-T, and a folder of 4 32x24 images."""
    root = tmp_path_factory.mktemp("ns")
    torch.manual_seed(0)
    sg2 = save(root / "sg2", G_ema=create_model("stylegan2-tiny", img_resolution=32, img_aspect=(4, 3)))
    sg3 = save(root / "sg3", G_ema=create_model("stylegan3-t-tiny", img_resolution=32, img_aspect=(4, 3)))
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    return root, sg2, sg3


def _run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def test_generate_grid_video_spectrum(wide, tmp_path):
    root, sg2, sg3 = wide
    _run("generate", "--network", sg3, "--seeds", "0-3", "--grid", "--outdir", tmp_path / "g", "--device", "cpu")
    assert Image.open(tmp_path / "g" / "grid.png").size[1] % H == 0
    _run("generate", "--network", sg3, "--seeds", "0", "--translate", "0.1,0", "--outdir", tmp_path / "t",
         "--device", "cpu")
    assert Image.open(tmp_path / "t" / "seed0000.png").size == (W, H)
    _run("video", "--network", sg2, "--seeds", "0-3", "--frames-per-seed", "2", "--grid", "2x1", "--out",
         tmp_path / "v.gif", "--device", "cpu")
    with Image.open(tmp_path / "v.gif") as im:
        assert im.size == (2 * W, H)
    multi = save(tmp_path / "multi", G_ema=create_model("stylegan2-tiny", img_resolution=32, img_aspect=(4, 3),
                                                         c_dim=3, cond_encoding="multi-label"))
    _run("video", "--network", multi, "--seeds", "0-1", "--frames-per-seed", "1", "--class", "0,2", "--out",
         tmp_path / "m.gif", "--device", "cpu")
    cont = save(tmp_path / "cont", G_ema=create_model("stylegan2-tiny", img_resolution=32, img_aspect=(4, 3),
                                                        c_dim=2, cond_encoding="continuous"))
    _run("video", "--network", cont, "--seeds", "0-1", "--frames-per-seed", "1", "--cond-vector", "0.2,0.9",
         "--out", tmp_path / "c.gif", "--device", "cpu")
    bad = CliRunner().invoke(cli, ["video", "--network", str(cont), "--seeds", "0-1", "--out", str(tmp_path / "x.gif"),
                                   "--class", "1", "--device", "cpu"])
    assert bad.exit_code != 0 and "--cond-vector with 2" in bad.output
    _run("spectrum", "--network", sg2, "--data", root / "imgs", "--num", "4", "--out", tmp_path / "s",
         "--device", "cpu")
    summary = json.loads((tmp_path / "s" / "spectrum.json").read_text())
    assert summary["num_images"] == {"generated": 4, "dataset": 4}


def test_projection_explorer_export(wide, tmp_path):
    from styleforge.explore.render import Explorer, RenderRequest, parse_request
    from styleforge.inversion.distance import PerceptualDistance
    from styleforge.inversion.projector import ProjectorConfig, project
    from styleforge.inversion.targets import load_targets, target_size
    from styleforge.loading import load
    from styleforge.utils.errors import UserInputError

    root, sg2, _ = wide
    G = load(sg2).generator
    files, targets = load_targets(root / "imgs" / "0.png", target_size(G), G.img_channels)
    assert targets.shape == (1, 3, H, W)

    class Pixels(PerceptualDistance):
        def embed(self, images):
            return images.flatten(1)

    res = project(G, targets, Pixels(), ProjectorConfig(num_steps=2, w_avg_samples=20))
    assert res.images.shape == (1, 3, H, W) and torch.isfinite(res.images).all()

    ex = Explorer([str(sg2)])
    info = ex.open("sg2")
    assert info["layers"][0]["size"] == [H, W]
    frame = ex.render(RenderRequest(network="sg2", seed=1))
    assert (frame.meta["width"], frame.meta["height"]) == (W, H)
    cont = save(tmp_path / "cont", G_ema=create_model("stylegan2-tiny", img_resolution=32, img_aspect=(4, 3),
                                                        c_dim=2, cond_encoding="continuous"))
    ex = Explorer([str(cont)])
    assert ex.open("cont")["c_dim"] == 2
    a = ex.render(parse_request({"network": "cont", "seed": 1, "cond_vector": [0.2, 0.9]}))
    b = ex.render(parse_request({"network": "cont", "seed": 1, "cond_vector": [0.9, 0.2]}))
    assert (a.meta["width"], a.meta["height"]) == (W, H) and a.data != b.data
    with pytest.raises(UserInputError, match="continuous attributes"):
        ex.render(parse_request({"network": "cont", "seed": 1}))

    from styleforge.convert.export import ExportableGenerator, ExportOptions, check_export, export_generator

    with torch.no_grad():  # --resolution sets the longer side and keeps the aspect ratio
        small = ExportableGenerator(G, ExportOptions(resolution=16))(torch.randn(1, G.z_dim), torch.tensor([1.0]))
    assert small.shape == (1, 3, 12, 16)
    opts = ExportOptions(format="torchscript")  # (ONNX takes the same path through the wrapper, 20x slower)
    path = export_generator(G, tmp_path / "g.pt", opts)
    assert check_export(G, path, opts) < 1e-4


def test_fid_features_and_eqt_on_a_non_square_generator(wide):
    from styleforge.feature_nets.inception import tf_bilinear_resize

    # The FID protocol (NVIDIA's Inception) resizes every image to 299x299 whatever its shape, aspect included.
    x = torch.linspace(-1, 1, W).expand(2, 3, H, W)
    out = tf_bilinear_resize(x, (299, 299))
    row = out[0, 0, 150]
    assert out.shape == (2, 3, 299, 299) and row[0] == -1 and row[-1] == 1 and (row.diff() >= 0).all()
    torch.manual_seed(0)
    G = create_model("stylegan3-t-tiny", img_resolution=32, img_aspect=(4, 3))
    cfg = eq.EquivarianceConfig(num_samples=4, batch_size=4, eqt_int=True, eqt_frac=True)
    res = eq.compute_equivariance(G, cfg)
    torch.manual_seed(0)
    square = eq.compute_equivariance(create_model("stylegan3-t-tiny", img_resolution=32), cfg)
    assert abs(res["eqt_int"] - square["eqt_int"]) < 5 and res["eqt_int"] > 60
    with pytest.raises(Exception, match="EQ-R is defined on square images"):
        eq.compute_equivariance(G, eq.EquivarianceConfig(num_samples=2, batch_size=2, eqr=True))

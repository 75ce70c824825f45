"""Precision/recall and PPL with NVIDIA's ``vgg16.pt``: a TorchScript file scripted here (NVIDIA's parameter
layout) is preferred when given, gives PPL equal to the torchvision + lpips route on the same weights, and the
protocol record says which file was used."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import styleforge
from styleforge.feature_nets import vgg16 as vgg
from styleforge.metrics import _features as fx
from styleforge.metrics.ppl import compute_ppl
from styleforge.metrics.registry import MetricContext
from styleforge.utils.errors import UserInputError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
_TV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


class _NvidiaLayout(nn.Module):
    """NVIDIA's vgg16.pt parameter names: ``layers.conv1..13``, ``layers.fc1..3`` (tiny here), ``lpips0..4``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layers = nn.Module()
        in_ch = 3
        for k, out_ch in enumerate(_CHANNELS, 1):
            conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (3 * in_ch**0.5))
                conv.bias.copy_(0.1 * torch.randn(out_ch, generator=g))
            self.layers.add_module(f"conv{k}", conv)
            in_ch = out_ch
        for k in (1, 2, 3):
            self.layers.add_module(f"fc{k}", nn.Linear(4, 4))
        for i, c in enumerate(vgg.LPIPS_CHANNELS):
            self.register_parameter(f"lpips{i}", nn.Parameter(torch.rand(c, generator=g)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers.conv1(x)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg")
    net = _NvidiaLayout(0)
    torch.jit.save(torch.jit.script(net), str(root / "vgg16.pt"))
    tv = {}
    for idx, k in zip(_TV_INDEX, range(1, 14), strict=True):
        conv = getattr(net.layers, f"conv{k}")
        tv[f"features.{idx}.weight"], tv[f"features.{idx}.bias"] = conv.weight.detach(), conv.bias.detach()
    torch.save(tv, root / "vgg16-397923af.pth")
    lins = {f"lin{i}.model.1.weight": getattr(net, f"lpips{i}").detach().view(1, -1, 1, 1) for i in range(5)}
    torch.save(lins, root / "vgg.pth")
    return root


def _ctx(G, **options) -> MetricContext:
    return MetricContext(G=G, dataset=None, options={"records": {}, **options}, seed=3)


def test_ppl_uses_vgg16_pt_and_equals_the_torchvision_route(weight_files, monkeypatch):
    monkeypatch.delenv(vgg.NVIDIA_LPIPS_ENV_VAR, raising=False)
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan2-tiny").eval()
    nvidia_ctx = _ctx(G, vgg16=str(weight_files / "vgg16.pt"))
    tv_ctx = _ctx(G, vgg16=str(weight_files / "vgg16-397923af.pth"), lpips=str(weight_files / "vgg.pth"))
    assert fx.nvidia_vgg16_file(nvidia_ctx) == weight_files / "vgg16.pt" and fx.nvidia_vgg16_file(tv_ctx) is None
    a = compute_ppl(nvidia_ctx, num_samples=4, metric="ppl")
    b = compute_ppl(tv_ctx, num_samples=4, metric="ppl")
    assert a > 0 and abs(a - b) <= 1e-4 * abs(b)
    assert nvidia_ctx.options["records"]["ppl"]["weights_format"] == "nvidia-vgg16.pt"
    assert tv_ctx.options["records"]["ppl"]["weights_format"] == "torchvision+lpips"
    # found without an explicit path through $STYLEFORGE_VGG16_LPIPS
    monkeypatch.setenv(vgg.NVIDIA_LPIPS_ENV_VAR, str(weight_files / "vgg16.pt"))
    assert fx.nvidia_vgg16_file(_ctx(G)) == weight_files / "vgg16.pt"


def test_precision_recall_network_from_vgg16_pt(weight_files):
    state = vgg.vgg16_state_from_nvidia({
        "layers.conv1.weight": torch.zeros(64, 3, 3, 3), "layers.conv1.bias": torch.zeros(64),
        "layers.fc1.weight": torch.ones(2, 3), "layers.fc2.bias": torch.ones(2), "layers.fc3.weight": torch.ones(1),
        "lpips0": torch.ones(64),
    })
    assert set(state) == {"convs.conv1_1.weight", "convs.conv1_1.bias", "fc6.weight", "fc7.bias", "fc8.weight"}
    assert torch.equal(state["fc6.weight"], torch.ones(2, 3))
    # the scripted file's classifier is 4 x 4, so the strict load refuses it (a real vgg16.pt has 25088 x 4096)
    with pytest.raises(UserInputError, match="fc6"):
        vgg.load_vgg16_nvidia(weight_files / "vgg16.pt")


def test_nvidia_embedding_resizes_like_tensorflow():
    """NVIDIA's vgg16.pt resizes to 224 with TensorFlow 1's bilinear resize (the FID Inception's resize), not with
    anti-aliased bilinear as the torchvision route does."""
    from styleforge.feature_nets.inception import tf_bilinear_resize

    net = vgg.VGG16(vgg.VGG16Config(with_classifier=False))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    want = (tf_bilinear_resize(images / 255, (224, 224)) - mean) / std
    net.resize_mode = "tf_bilinear"
    got = net.embed_input(images)
    net.resize_mode = "bilinear_antialias"
    other = net.embed_input(images)
    assert torch.allclose(got, want, atol=1e-6) and (got - other).abs().max() > 0.05

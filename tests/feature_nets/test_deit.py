"""DeiT: the architecture against an independent forward written from the timm-layout tensors, the timm
remapping with its errors, the DPT readout, and the DeiT paths of the projected discriminator and guidance."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from styleforge.feature_nets import deit as dt
from styleforge.models import projected_discriminator as pd
from styleforge.utils.errors import UserInputError


@functools.lru_cache(maxsize=1)
def _timm_state(variant: str = "deit_small_distilled", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with timm's names and shapes for ``deit_*_distilled_patch16_224`` (written here, not
    taken from our module; cached: do not modify)."""
    cfg = dt.DEIT_CONFIGS[variant]
    d, g = cfg.dim, torch.Generator().manual_seed(seed)

    def r(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    state = {
        "cls_token": r(1, 1, d, std=1.0),
        "dist_token": r(1, 1, d, std=1.0),
        "pos_embed": r(1, 198, d, std=0.5),
        "patch_embed.proj.weight": r(d, 3, 16, 16, std=0.05),
        "patch_embed.proj.bias": r(d),
        "norm.weight": 1 + r(d, std=0.1),
        "norm.bias": r(d),
        "head.weight": r(1000, d, std=0.1),
        "head.bias": r(1000),
        "head_dist.weight": r(1000, d, std=0.1),
        "head_dist.bias": r(1000),
    }
    for i in range(12):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + r(d, std=0.1), b + "norm1.bias": r(d),
            b + "attn.qkv.weight": r(3 * d, d, std=0.08), b + "attn.qkv.bias": r(3 * d),
            b + "attn.proj.weight": r(d, d, std=0.05), b + "attn.proj.bias": r(d),
            b + "norm2.weight": 1 + r(d, std=0.1), b + "norm2.bias": r(d),
            b + "mlp.fc1.weight": r(4 * d, d, std=0.05), b + "mlp.fc1.bias": r(4 * d),
            b + "mlp.fc2.weight": r(d, 4 * d, std=0.05), b + "mlp.fc2.bias": r(d),
        })
    return state


def _independent_forward(s: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> tuple[torch.Tensor, list]:
    """A distilled ViT written out with explicit softmax attention: (logits, outputs of every block)."""
    n = x.shape[0]
    p = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=16)
    t = p.reshape(n, p.shape[1], -1).permute(0, 2, 1)
    t = torch.cat([s["cls_token"].expand(n, 1, -1), s["dist_token"].expand(n, 1, -1), t], 1) + s["pos_embed"]
    d = t.shape[-1]
    hd = d // heads
    outs = []
    for i in range(12):
        b = f"blocks.{i}."
        h = F.layer_norm(t, (d,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps=1e-6)
        qkv = h @ s[b + "attn.qkv.weight"].T + s[b + "attn.qkv.bias"]
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(n, -1, heads, hd).transpose(1, 2) for j in range(3))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        t = t + a.transpose(1, 2).reshape(n, -1, d) @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
        h = F.layer_norm(t, (d,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"])
        t = t + h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"]
        outs.append(t)
    t = F.layer_norm(t, (d,), s["norm.weight"], s["norm.bias"], eps=1e-6)
    logits = (t[:, 0] @ s["head.weight"].T + s["head.bias"] + t[:, 1] @ s["head_dist.weight"].T + s["head_dist.bias"])
    return logits / 2, outs


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("deit") / "deit_small_distilled_patch16_224.pth"
    torch.save({"model": _timm_state()}, path)  # timm's released checkpoints wrap the weights in "model"
    return path


def test_forward_matches_an_independent_implementation(small_file):
    net = dt.load_deit(small_file)
    assert net.config == dt.DEIT_CONFIGS["deit_small_distilled"] and not net.training
    x = torch.randn(2, 3, 224, 224)
    want, blocks = _independent_forward(_timm_state(), x, heads=6)
    with torch.no_grad():
        got = net(x)
        _, taps = net.tokens(x, dt.READOUT_BLOCKS)
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    for tap, i in zip(taps, dt.READOUT_BLOCKS, strict=True):
        assert torch.allclose(tap, blocks[i], atol=1e-4, rtol=1e-4)


def test_safetensors_and_loading_errors(tmp_path, small_file):
    from safetensors.torch import save_file

    state = _timm_state()
    st = tmp_path / "w.safetensors"
    save_file(state, str(st))
    assert torch.equal(dt.load_deit(st).pos_embed, state["pos_embed"])
    with pytest.raises(UserInputError, match="deit_base_distilled weights"):
        dt.load_deit(small_file, "deit_base_distilled")
    with pytest.raises(UserInputError, match="does not exist"):
        dt.load_deit(tmp_path / "missing.pth")
    bad = dict(state)
    bad["blocks.0.attn.q_norm.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserInputError, match="unexpected key"):
        dt.load_deit(tmp_path / "bad.pth")
    short = {k: v for k, v in state.items() if not k.startswith("blocks.11.")}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(UserInputError, match="missing"):
        dt.load_deit(tmp_path / "short.pth")
    wrong = dict(state, **{"head.weight": torch.zeros(10, 384)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(UserInputError, match="shape"):
        dt.load_deit(tmp_path / "wrong.pth")


def test_readout_shapes_of_deit_base():
    readout = dt.DeiTReadout(768)
    maps = readout([torch.randn(2, 198, 768) for _ in range(4)])
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7)]
    # the class and distillation tokens are dropped: changing them changes nothing
    t = torch.randn(1, 198, 768)
    t2 = t.clone()
    t2[:, :2] = 100.0
    assert torch.equal(readout([t] * 4)[2], readout([t2] * 4)[2])


def test_projected_d_and_guidance_with_deit_weights(small_file):
    cfg = pd.ProjectedDConfig(backbones=("deit_small_distilled",), diffaugment="")
    D = pd.make_projected_discriminator(cfg, 32, deit_weights=small_file)
    backbone = D.features["deit_small_distilled"].backbone
    assert torch.equal(backbone.pos_embed, _timm_state()["pos_embed"]) and not backbone.pos_embed.requires_grad
    assert D(torch.zeros(1, 3, 32, 32), torch.zeros(1, 0)).shape == (1, 64)
    clf = pd.guidance_classifier(deit_small_weights=small_file)
    img = torch.rand(2, 3, 40, 40) * 2 - 1
    x = ((img + 1) / 2 - torch.tensor(dt.IMAGENET_MEAN)[:, None, None]) / torch.tensor(dt.IMAGENET_STD)[:, None, None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(clf.train()(img), _independent_forward(_timm_state(), x, 6)[0], atol=1e-3)
    assert not clf.net.training

"""The projected discriminator: structure and shapes, the frozen part, spectral norm, conditioning, rebuild."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from styleforge.models import projected_discriminator as pd
from styleforge.models.base import network_from_description
from styleforge.utils.errors import UserInputError


def _onehot(n: int, c_dim: int) -> torch.Tensor:
    return F.one_hot(torch.arange(n) % c_dim, c_dim).float()


def test_tiny_shapes_and_gradient_to_the_image():
    D = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(), 16)
    img = torch.randn(2, 3, 16, 16, requires_grad=True)
    out = D(img, torch.zeros(2, 0))
    assert out.shape == (2, 3 * 25 + 1)
    out.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(p.grad is None for p in D.features.parameters())
    assert all(p.grad is not None for p in D.trainable_parameters())


def test_official_structure_at_224(monkeypatch):
    """Per backbone four heads of 4x4 logits (64 per image); CSM maps 64/64/128/256 ch at 112/56/28/14 px;
    DiffAugment drawn separately for each backbone."""
    cfg = pd.ProjectedDConfig(backbones=("deit_small_distilled", "efficientnet_lite0"), c_dim=5)
    D = pd.ProjectedDiscriminator(cfg, 32).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    seen = []

    def spy(img, policy, generator=None):
        seen.append(pd.diff_augment.__wrapped__(img, policy, generator))
        return seen[-1]

    spy.__wrapped__ = pd.diff_augment
    monkeypatch.setattr(pd, "diff_augment", spy)
    with torch.no_grad():
        assert D(x, _onehot(1, 5)).shape == (1, 128)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    with torch.no_grad():
        for name in cfg.backbones:
            feats = D.features[name](D.backbone_input(name, x))
            assert [tuple(f.shape[1:]) for f in feats] == [(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14)]
    assert [len(h.blocks) for h in D.heads["efficientnet_lite0"]] == [4, 3, 2, 1]
    head0 = D.heads["efficientnet_lite0"][0]
    assert [b.conv.weight_orig.shape[0] for b in head0.blocks] == [64, 128, 256, 512]
    assert head0.out.weight_orig.shape == (64, 512, 4, 4) and head0.embed.weight.shape == (5, 320)


def test_backbone_input_path():
    D = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(), 16)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    lite = D.backbone_input("efficientnet_lite0", x)  # mean/std 0.5: back to [-1, 1], resized to 64
    assert lite.shape[-1] == 64
    assert torch.allclose(lite, F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False), atol=1e-6)
    big = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(), 128)
    assert big.backbone_input("efficientnet_lite0", torch.zeros(1, 3, 128, 128)).shape[-1] == 128  # native
    vit = pd.ProjectedDiscriminator.__new__(pd.ProjectedDiscriminator)
    torch.nn.Module.__init__(vit)
    vit.config = pd.ProjectedDConfig(backbones=("deit_small_distilled",))
    y = vit.backbone_input("deit_small_distilled", torch.ones(1, 3, 256, 256))  # always 224, ImageNet stats
    assert y.shape[-1] == 224
    assert torch.allclose(y[0, :, 0, 0], (1 - torch.tensor(pd.IMAGENET_MEAN)) / torch.tensor(pd.IMAGENET_STD))


def test_frozen_part_stays_frozen_and_in_eval_mode():
    D = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(c_dim=3), 16)
    D.requires_grad_(True).train()
    assert not any(p.requires_grad for p in D.features.parameters())
    assert not any(m.training for m in D.features.modules())
    assert all(p.requires_grad for p in D.heads.parameters()) and D.heads.training
    before = {k: v.clone() for k, v in D.features.state_dict().items()}
    D(torch.randn(4, 3, 16, 16), _onehot(4, 3))
    after = D.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics of the backbone untouched


def test_spectral_norm_matches_torch():
    torch.manual_seed(0)
    ours = pd.SpectralNormConv2d(3, 5, 4, stride=2, padding=1)
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 5, 4, stride=2, padding=1, bias=False))
    with torch.no_grad():
        ref.weight_orig.copy_(ours.weight_orig)
        ref.weight_u.copy_(ours.weight_u)
        ref.weight_v.copy_(ours.weight_v)
    x = torch.randn(2, 3, 8, 8)
    for mode in (True, True, False):
        ours.train(mode)
        ref.train(mode)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert torch.allclose(ours.weight_u, ref.weight_u)
    ours.train()
    for _ in range(200):
        w = ours.normalized_weight()
    assert float(torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)) == pytest.approx(1.0, abs=1e-4)
    u = ours.weight_u.clone()
    ours.eval()(x)
    assert torch.equal(u, ours.weight_u)  # no power iteration in eval mode


def test_conditioning_uses_the_class():
    D = pd.ProjectedDiscriminator(dataclasses.replace(pd.tiny_projected_d_config(c_dim=4), diffaugment=""), 16)
    with torch.no_grad():  # converge the spectral norms' power iteration (random u, v overestimate 1 / sigma)
        for m in D.modules():
            if isinstance(m, pd.SpectralNormConv2d):
                for _ in range(30):
                    m.normalized_weight()
    D.eval()
    img = torch.randn(1, 3, 16, 16).expand(4, -1, -1, -1)
    with torch.no_grad():
        out = D(img, torch.eye(4))
        again = D(img[:1], torch.eye(4)[2:3])
    assert not torch.allclose(out[0], out[1])
    assert torch.allclose(out[2], again[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="conditional"):
        D(img, None)


def test_seeded_init_and_rebuild_from_description():
    D = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(c_dim=2), 16, seed=5)
    rng = torch.get_rng_state()
    same = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(c_dim=2), 16, seed=5)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is untouched
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(), same.state_dict().values(), strict=True))
    desc = D.describe()
    assert desc["config"]["img_resolution"] == 16
    rebuilt = network_from_description(desc)
    rebuilt.load_state_dict(D.state_dict(), strict=True)
    x, c = torch.randn(2, 3, 16, 16), _onehot(2, 2)
    D.eval(), rebuilt.eval()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(D(x, c, generator=g1), rebuilt(x, c, generator=g2))


def test_config_errors():
    with pytest.raises(UserInputError, match="Unknown projected-discriminator backbone"):
        pd.ProjectedDConfig(backbones=("resnet50",))
    with pytest.raises(UserInputError, match="tiny"):
        pd.ProjectedDConfig(tiny=True)
    with pytest.raises(UserInputError, match="DiffAugment"):
        pd.ProjectedDConfig(diffaugment="color,rotate")


def test_factory_without_deit_weights_uses_efficientnet_only(monkeypatch, tmp_path):
    from styleforge.feature_nets import efficientnet_lite as el

    net = el.EfficientNetLite0()
    from tests.feature_nets.test_efficientnet_lite import _package_state

    path = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(_package_state(net), path)
    lines = []
    D = pd.make_projected_discriminator(pd.ProjectedDConfig(), 32, efficientnet_weights=path, log=lines.append)
    assert D.config.backbones == ("efficientnet_lite0",) and "EfficientNet-lite0 only" in lines[0]
    assert torch.equal(D.features["efficientnet_lite0"].backbone.stem.conv.weight, net.stem.conv.weight)
    with pytest.raises(UserInputError, match="deit-weights"):
        pd.make_projected_discriminator(pd.ProjectedDConfig(backbones=("deit_base_distilled",)), 32)


def test_save_and_load_in_our_format(tmp_path):
    import styleforge

    D = pd.ProjectedDiscriminator(pd.tiny_projected_d_config(c_dim=3), 16, seed=2)
    styleforge.save(tmp_path / "d", D=D)
    loaded = styleforge.load(tmp_path / "d").D
    assert isinstance(loaded, pd.ProjectedDiscriminator) and loaded.img_resolution == 16
    assert loaded.config == D.config
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(), loaded.state_dict().values(), strict=True))

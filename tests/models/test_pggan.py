"""PGGAN networks: pixel norm, equalized learning rate, minibatch stddev, fade-in and the shared battery."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import styleforge
from styleforge.models.pggan import (
    PGGANDiscriminator,
    PGGANGenerator,
    downsample_box,
    feature_maps,
    minibatch_stddev,
    pixel_norm,
    upsample_nearest,
)
from styleforge.utils.errors import UserInputError
from tests.models.common import DISCRIMINATOR_CHECKS, GENERATOR_CHECKS

TINY = "pggan-tiny"
LRELU = 0.2

# Every parameter of a growing network is used only at some stages (a lower-resolution toRGB/fromRGB is idle
# once its resolution is fully faded out), so the battery's "every parameter gets a gradient" check runs on
# the 4x4 network, where everything is in use; test_backward_at_stage covers the grown networks.
_STAGE_DEPENDENT = {"backward"}
# The conditional PGGAN D is an auxiliary classifier (its score does not take c); tested separately below.
_NOT_APPLICABLE_D = {"conditioning"}


def _G(**kw) -> PGGANGenerator:
    return styleforge.create_model(TINY, **kw)


def _D(**kw) -> PGGANDiscriminator:
    return styleforge.create_model(TINY, net="D", **kw)


@pytest.mark.parametrize("check", sorted(GENERATOR_CHECKS))
@pytest.mark.parametrize("c_dim", [0, 3])
def test_generator_battery(check, c_dim, tmp_path):
    if check in _STAGE_DEPENDENT:
        GENERATOR_CHECKS[check](lambda: _G(c_dim=c_dim, img_resolution=4), tmp_dir=tmp_path)
    else:
        GENERATOR_CHECKS[check](lambda: _G(c_dim=c_dim), tmp_dir=tmp_path)


@pytest.mark.parametrize("check", sorted(set(DISCRIMINATOR_CHECKS) - _NOT_APPLICABLE_D))
def test_discriminator_battery(check, tmp_path):
    if check in _STAGE_DEPENDENT:
        DISCRIMINATOR_CHECKS[check](lambda: _D(img_resolution=4), tmp_dir=tmp_path)
    else:
        DISCRIMINATOR_CHECKS[check](_D, tmp_dir=tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Building blocks


def test_pixel_norm_unit_mean_square_and_formula():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, 4, generator=gen) * 10
    y = pixel_norm(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(3, 5, 4), rtol=0, atol=1e-5)
    # eq. 4 written out for one pixel
    a = x[1, :, 2, 3]
    torch.testing.assert_close(y[1, :, 2, 3], a / torch.sqrt((a**2).sum() / 7 + 1e-8))
    # invariant to a positive rescaling of the features, and the epsilon keeps zero input at zero
    torch.testing.assert_close(pixel_norm(x * 123.0), y, rtol=1e-5, atol=1e-6)
    assert torch.equal(pixel_norm(torch.zeros(2, 4)), torch.zeros(2, 4))


def test_minibatch_stddev_matches_direct_computation():
    gen = torch.Generator().manual_seed(1)
    n, c, h, w, group = 8, 3, 4, 4, 4
    x = torch.randn(n, c, h, w, generator=gen)
    y = minibatch_stddev(x, group)
    assert y.shape == (n, c + 1, h, w)
    assert torch.equal(y[:, :c], x)
    groups = n // group
    for m in range(groups):
        members = [i for i in range(n) if i % groups == m]  # sample n is in group n % (N / G)
        stack = x[members]
        # population standard deviation per feature and pixel
        std = torch.sqrt(((stack - stack.mean(0)) ** 2).mean(0) + 1e-8)
        for i in members:
            torch.testing.assert_close(y[i, c], std.mean().expand(h, w))
    # a batch of identical samples has (almost) zero deviation
    same = x[:1].expand(4, -1, -1, -1)
    assert minibatch_stddev(same, 4)[:, c].max() < 1e-3
    with pytest.raises(UserInputError, match="divisible"):
        minibatch_stddev(x[:6], 4)


def test_channel_formula_and_paper_parameter_counts():
    # appendix A: 512 maps up to 64x64, then 256, 128, 64, 32, 16 at 1024x1024
    channels = [feature_maps(r - 1, 8192, 1.0, 512) for r in range(2, 11)]
    assert channels == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    G = styleforge.create_model("pggan")
    D = styleforge.create_model("pggan", net="D")
    # table 2 of the paper: 23.1M parameters in each network
    assert round(sum(p.numel() for p in G.parameters()) / 1e6, 1) == 23.1
    assert round(sum(p.numel() for p in D.parameters()) / 1e6, 1) == 23.1
    assert G.block_channels()[1024] == 16 and G.img_resolution == 1024 and G.z_dim == 512


def test_equalized_learning_rate_effective_weight_scale():
    """Weights are stored ~N(0, 1) and scaled at run time by the He constant sqrt(2 / fan_in) (sec. 4.1)."""
    torch.manual_seed(0)
    G = _G()
    layer = G.blocks["b16"].conv0  # 3x3 conv, 64 -> 64
    fan_in = layer.weight.shape[1] * 9
    assert abs(layer.weight.std().item() - 1.0) < 0.02  # unit-variance storage
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, layer.weight.shape[1], 6, 6, generator=torch.Generator().manual_seed(2))
    # paper form: lrelu(conv(x, w * sqrt(2 / fan_in)) + b') with b' = sqrt(2) * b
    he = math.sqrt(2.0 / fan_in)
    expected = F.leaky_relu(F.conv2d(x, layer.weight * he, layer.bias * math.sqrt(2.0), padding=1), LRELU)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    # the toRGB layer is linear with gain 1: w / sqrt(fan_in)
    rgb = G.to_rgb["b16"]
    y = torch.randn(2, rgb.weight.shape[1], 3, 3)
    ref = F.conv2d(y, rgb.weight / math.sqrt(rgb.weight.shape[1]), rgb.bias)
    torch.testing.assert_close(rgb(y), ref, rtol=1e-5, atol=1e-5)
    # the effective scale follows the stored weights: doubling them doubles the pre-activation
    with torch.no_grad():
        layer.bias.zero_()
        out1 = layer(x)
        layer.weight.mul_(2)
        torch.testing.assert_close(layer(x), 2 * out1, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Fade-in


def _manual_generator(G: PGGANGenerator, z: torch.Tensor, res: int) -> torch.Tensor:
    """The fully faded-in network at ``res`` written out block by block."""
    x = G.input(pixel_norm(z))
    r = 8
    while r <= res:
        x = G.blocks[f"b{r}"](x)
        r *= 2
    return G.to_rgb[f"b{res}"](x)


def test_generator_fade_in_blend():
    torch.manual_seed(0)
    G = _G().eval()
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        low = G.set_stage(8, 1.0)(z)
        assert low.shape == (4, 3, 8, 8) and G.current_resolution == 8
        zero = G.set_stage(16, 0.0)(z)
        one = G.set_stage(16, 1.0)(z)
        quarter = G.set_stage(16, 0.25)(z)
        new_block = _manual_generator(G, z, 16)
    assert zero.shape == one.shape == (4, 3, 16, 16)
    # alpha = 0: the lower-resolution output, nearest-upsampled; alpha = 1: the new block's toRGB
    assert torch.equal(zero, upsample_nearest(low))
    assert torch.equal(one, new_block)
    torch.testing.assert_close(quarter, 0.75 * upsample_nearest(low) + 0.25 * new_block, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(zero, one)


def test_discriminator_fade_in_blend():
    torch.manual_seed(0)
    D = _D().eval()
    img = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        low = D.set_stage(8, 1.0)(downsample_box(img))
        zero = D.set_stage(16, 0.0)(img)
        one = D.set_stage(16, 1.0)(img)
        # alpha = 1 written out: fromRGB_16 -> block 16 -> block 8 -> output
        x = D.blocks["b8"](D.blocks["b16"](D.from_rgb["b16"](img)))
        manual = D.output(x)
        half = D.set_stage(16, 0.5)(img)
        new = D.blocks["b16"](D.from_rgb["b16"](img))
        mixed = torch.lerp(D.from_rgb["b8"](downsample_box(img)), new, 0.5)
        manual_half = D.output(D.blocks["b8"](mixed))
    torch.testing.assert_close(zero, low, rtol=0, atol=0)
    torch.testing.assert_close(one, manual, rtol=0, atol=0)
    torch.testing.assert_close(half, manual_half, rtol=1e-6, atol=1e-6)
    with pytest.raises(UserInputError, match="shape"):
        D(torch.zeros(4, 3, 32, 32))  # D is at 16x16


def test_stage_is_persistent_and_validated(tmp_path):
    torch.manual_seed(0)
    G = _G().set_stage(16, 0.375)
    sd = G.state_dict()
    assert int(sd["stage_resolution"]) == 16 and float(sd["stage_alpha"]) == 0.375
    other = _G()
    assert other.current_resolution == 32 and other.alpha == 1.0  # a fresh network is fully grown
    other.load_state_dict(sd)
    assert (other.current_resolution, other.alpha) == (16, 0.375)
    # through our file format: styleforge.load restores the stage with the weights
    styleforge.save(tmp_path / "snap", G_ema=G, extra={"family": "pggan"})
    loaded = styleforge.load(tmp_path / "snap").generator
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(loaded(z), G.eval()(z))
        big = loaded(z, full_resolution=True)
    assert big.shape == (2, 3, 32, 32)
    assert torch.equal(big, upsample_nearest(loaded(z)))
    for bad in [(12, 1.0), (64, 1.0), (16, 1.5), (4, 0.5)]:
        with pytest.raises(UserInputError):
            G.set_stage(*bad)
    with pytest.raises(UserInputError, match="truncation"):
        G(z, truncation_psi=0.7)
    with pytest.raises(UserInputError, match="power of two"):
        _G(img_resolution=48)


def test_backward_at_stage():
    """During a fade-in every parameter of the active resolutions gets a gradient; the idle ones get none."""
    torch.manual_seed(0)
    G, D = _G().set_stage(16, 0.5), _D().set_stage(16, 0.5)
    z = torch.randn(4, G.z_dim)
    D(G(z)).sum().backward()
    idle_g = ("blocks.b32", "to_rgb.b32", "to_rgb.b4")
    idle_d = ("blocks.b32", "from_rgb.b32", "from_rgb.b4")
    for net, idle_prefixes in ((G, idle_g), (D, idle_d)):
        for name, p in net.named_parameters():
            idle = name.startswith(idle_prefixes)
            assert (p.grad is None) == idle, f"{type(net).__name__}.{name}: idle={idle}"
            if not idle:
                assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_conditional_auxiliary_classifier():
    torch.manual_seed(0)
    G, D = _G(c_dim=5), _D(c_dim=5)
    z = torch.randn(4, G.z_dim)
    c = F.one_hot(torch.tensor([0, 1, 2, 3]), 5).float()
    with torch.no_grad():
        img = G(z, c)
        assert not torch.allclose(img, G(z, c.roll(1, dims=1)))  # the label changes the image
        scores, logits = D(img, c, return_label_logits=True)
    assert scores.shape == (4, 1) and logits.shape == (4, 5)
    assert torch.equal(scores, D(img, c))
    with pytest.raises(UserInputError, match="c must have shape"):
        G(z)

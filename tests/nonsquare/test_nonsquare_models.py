"""Non-square StyleGAN2 / StyleGAN3 networks (issue 17): shapes, the square default, bad aspect ratios."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from styleforge.models.base import aspect_image_size, image_size, network_from_description
from styleforge.models.registry import create_model
from styleforge.utils.errors import UserInputError

ASPECTS = [((4, 3), (32, 24)), ((3, 4), (24, 32)), ((2, 1), (32, 16))]


@pytest.mark.parametrize("preset", ["stylegan2-tiny", "stylegan3-t-tiny"])
@pytest.mark.parametrize(("aspect", "size"), ASPECTS)
def test_generator_and_discriminator_shapes(preset, aspect, size):
    torch.manual_seed(0)
    G = create_model(preset, img_resolution=32, img_aspect=aspect)
    D = create_model(preset, net="D", img_resolution=32, img_aspect=aspect)
    assert image_size(G) == image_size(D) == size
    img = G(torch.randn(4, G.z_dim))
    assert list(img.shape) == [4, 3, size[1], size[0]]
    logits = D(img)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()  # D and G are differentiable end to end
    assert all(p.grad is not None for p in G.synthesis.parameters() if p.requires_grad)
    # the description round-trips through JSON types (lists for tuples)
    desc = G.describe()
    desc["config"]["img_aspect"] = list(desc["config"]["img_aspect"])
    assert image_size(network_from_description(desc)) == size


def test_stylegan2_lowest_level_is_non_square():
    G = create_model("stylegan2-tiny", img_resolution=32, img_aspect=(4, 3))
    D = create_model("stylegan2-tiny", net="D", img_resolution=32, img_aspect=(4, 3))
    assert G.synthesis.b4.const.shape[1:] == (3, 4)  # [C, H, W]
    assert G.synthesis.b32.conv1.noise_const.shape == (24, 32)
    assert D.b4.fc.weight.shape[1] == D.b4.in_channels * 12


@pytest.mark.parametrize("preset", ["stylegan2-tiny", "stylegan3-t-tiny"])
def test_square_aspect_is_the_old_network(preset):
    """img_aspect None and (1, 1) build exactly the square network of before (same parameters, same images)."""
    torch.manual_seed(1)
    a = create_model(preset)
    torch.manual_seed(1)
    b = create_model(preset, img_aspect=(1, 1))
    assert "img_aspect" in {f.name for f in dataclasses.fields(a.config)} and a.config.img_aspect is None
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(2, a.z_dim, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a(z), b(z))
    # a config saved before the field existed loads as square
    cfg = dataclasses.asdict(a.config)
    del cfg["img_aspect"]
    assert image_size(network_from_description({"_class_name": type(a).__name__, "config": cfg})) == (16, 16)


def test_impossible_aspects_are_clear_errors():
    with pytest.raises(UserInputError, match="4:3, 3:4"):
        create_model("stylegan2-tiny", img_resolution=32, img_aspect=(16, 9))
    with pytest.raises(UserInputError, match="whole number"):
        aspect_image_size(32, (3, 5))
    with pytest.raises(UserInputError, match="img_aspect must be"):
        create_model("stylegan3-t-tiny", img_aspect=(4, 0))

"""DiffAugment: the ranges of the colour transforms, whole-pixel translation, cutout squares, gradients."""

from __future__ import annotations

import pytest
import torch

from styleforge.ops import diffaugment as da
from styleforge.utils.errors import UserInputError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_brightness_saturation_contrast_ranges():
    # a grey image: saturation and contrast cannot change it, only brightness shifts it by U[-0.5, 0.5)
    grey = torch.zeros(2000, 3, 4, 4)
    shift = da._color(grey, _gen())[:, 0, 0, 0]
    assert -0.5 <= float(shift.min()) < -0.45 and 0.45 < float(shift.max()) < 0.5
    # an image with zero mean per pixel and per image: only the saturation and contrast factors remain
    x = torch.tensor([1.0, -1.0, 0.0])[None, :, None, None].expand(4000, 3, 2, 2).contiguous()
    g = _gen(1)
    out = da._color(x, g)
    b = out.mean(dim=(1, 2, 3))  # brightness moved the mean
    factor = (out[:, 0, 0, 0] - b)  # = s * k
    assert float(factor.min()) >= 0 and float(factor.max()) < 3.0 and float(factor.max()) > 2.3
    assert float(factor.mean()) == pytest.approx(1.0, abs=0.05)  # E[s] E[k] = 1 * 1


def test_translation_moves_whole_pixels_within_the_ratio():
    x = torch.zeros(500, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    out = da._translation(x, _gen())
    assert out.sum(dim=(1, 2, 3)).eq(1).all()  # 2 = round(16 / 8) px at most: the impulse never leaves
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 16 - 8, pos % 16 - 8
    assert dy.abs().max() == 2 and dx.abs().max() == 2 and set(dy.tolist()) == {-2, -1, 0, 1, 2}
    ones = da._translation(torch.ones(200, 1, 16, 16), _gen(2))
    shifted = ones[:, 0, :, 0].eq(0).any(dim=1) | ones[:, 0, :, -1].eq(0).any(dim=1)
    assert shifted.any() and set(ones.unique().tolist()) == {0.0, 1.0}  # uncovered pixels are zero


def test_cutout_square_side():
    out = da._cutout(torch.ones(300, 3, 20, 20), _gen())
    zeros = out[:, 0].eq(0)
    assert zeros.sum(dim=(1, 2)).max() == 16  # side round(0.2 * 20) = 4
    assert zeros.sum(dim=(1, 2)).min() >= 4  # clipped at a corner: at least a 2 x 2 piece
    assert torch.equal(out[:, 0], out[:, 2])  # the same square on every channel


def test_policy_gradient_and_determinism():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    y = da.diff_augment(x, "color,translation,cutout", _gen(3))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(da.diff_augment(x, "cutout,color", _gen(4)), da.diff_augment(x, "color,cutout", _gen(4)))
    assert da.diff_augment(x, "") is x
    with pytest.raises(UserInputError, match="Unknown DiffAugment"):
        da.parse_policy("color,flip")

"""ADA: the augmentation pipeline and the adaptive probability."""

from __future__ import annotations

import pytest
import torch

from styleforge.training.augment import PIPELINES, AdaController, AugmentPipe


def _images(n=8, res=16):
    torch.manual_seed(0)
    return torch.rand(n, 3, res, res) * 2 - 1


def test_p_zero_is_identity_and_warp_identity_is_exact():
    x = _images()
    pipe = AugmentPipe(PIPELINES["bgc"], p=0.0)
    assert torch.equal(pipe(x), x)
    eye = torch.eye(3).expand(len(x), 3, 3)
    torch.testing.assert_close(pipe._warp(x, eye), x, rtol=0, atol=1e-5)
    shift = eye.clone()
    shift[:, 0, 2] = 2  # output pixel x samples input pixel x + 2
    torch.testing.assert_close(pipe._warp(x, shift)[..., :-2], x[..., 2:], rtol=0, atol=1e-5)


def test_full_pipeline_is_differentiable_and_random():
    x = _images().requires_grad_(True)
    pipe = AugmentPipe(PIPELINES["bgc"], p=1.0)
    torch.manual_seed(1)
    y = pipe(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert (y - x).abs().mean() > 0.1  # every image was changed
    torch.manual_seed(1)
    torch.testing.assert_close(pipe(x.detach()), y.detach())  # seeded: reproducible


def test_color_only_keeps_geometry_and_grayscale_works():
    pipe = AugmentPipe(PIPELINES["color"], p=1.0)
    gray = _images(4)[:, :1]
    out = pipe(gray)
    assert out.shape == gray.shape
    const = torch.full((2, 3, 8, 8), 0.3)
    out = pipe(const)  # a constant image stays constant per channel under colour transforms
    assert (out.amax(dim=(2, 3)) - out.amin(dim=(2, 3))).abs().max() < 1e-5


@pytest.mark.parametrize("sign, direction", [(1.0, 1), (-1.0, -1)])
def test_ada_p_moves_toward_target(sign, direction):
    pipe = AugmentPipe(PIPELINES["bgc"], p=0.5)
    ada = AdaController(pipe, target=0.6, interval=4, ada_kimg=1, batch_size=10)
    step = 10 * 4 / 1000
    for _ in range(8):  # two adjustments
        ada.accumulate(torch.full((10, 1), sign))
        ada.update()
    assert float(pipe.p) == pytest.approx(0.5 + direction * 2 * step)
    assert ada.last_rt == pytest.approx(sign)


def test_ada_p_clamps_at_zero_and_follows_overfitting_toy_d():
    # Toy problem: D's real logits are positive for a fraction q of the images; r_t = 2q - 1.
    pipe = AugmentPipe(PIPELINES["bgc"], p=0.0)
    ada = AdaController(pipe, target=0.6, interval=1, ada_kimg=0.1, batch_size=20)
    for q in (0.5, 0.5):  # r_t = 0 < target: p would go negative, clamped at 0
        ada.accumulate(torch.where(torch.arange(20) < 20 * q, 1.0, -1.0))
        ada.update()
    assert float(pipe.p) == 0.0
    history = []
    for _ in range(5):  # an overfitting D: r_t = 0.9 > target, p rises every step
        ada.accumulate(torch.where(torch.arange(20) < 19, 1.0, -1.0))
        ada.update()
        history.append(float(pipe.p))
    assert history == sorted(history) and history[-1] == pytest.approx(5 * 20 / 100)

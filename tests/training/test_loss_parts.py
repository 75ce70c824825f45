"""Pieces of the loop with exact expected values: EMA decay, lazy-regularisation Adam, blur, configs."""

from __future__ import annotations

import math

import pytest
import torch

from styleforge.training.config import make_train_config, train_config_from_dict
from styleforge.training.ema import ema_beta, update_ema
from styleforge.training.loop import _DataOrder, _make_optimizer
from styleforge.training.losses import StyleGANLoss, gaussian_blur
from styleforge.utils.errors import UserInputError


def test_ema_beta_half_life_and_rampup():
    assert ema_beta(32, 10**9, ema_kimg=10, ema_rampup=None) == pytest.approx(0.5 ** (32 / 10_000))
    # Early in training the half-life is cur_nimg * rampup = 1000 * 0.05 = 50 images.
    assert ema_beta(32, 1000, ema_kimg=10, ema_rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    w_ema, w = a.weight.detach().clone(), b.weight.detach().clone()
    update_ema(a, b, 0.25)
    torch.testing.assert_close(a.weight, w + 0.25 * (w_ema - w))


def test_lazy_regularisation_corrects_lr_and_betas():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = _make_optimizer(p, 0.002, (0.0, 0.99), 1e-8, reg_interval=16)
    g = opt.param_groups[0]
    assert g["lr"] == pytest.approx(0.002 * 16 / 17) and g["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert _make_optimizer(p, 0.002, (0.0, 0.99), 1e-8, reg_interval=0).param_groups[0]["lr"] == 0.002


def test_gaussian_blur_and_fade():
    img = torch.zeros(1, 1, 21, 21)
    img[0, 0, 10, 10] = 1
    out = gaussian_blur(img, 2.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    x = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / 2) ** 2)
    k = k / k.sum()
    torch.testing.assert_close(out[0, 0, 10, 4:17], k * k[6])
    cfg = make_train_config("stylegan3-r-tiny", "x", batch=32).loss
    loss = StyleGANLoss(torch.nn.Linear(1, 1), None, cfg)
    assert loss.blur_sigma(0) == 10 and loss.blur_sigma(100_000) == pytest.approx(5) and loss.blur_sigma(10**6) == 0


def test_data_order_is_a_permutation_per_epoch():
    order = _DataOrder(10, seed=3)
    first, second = order.indices(0, 10), order.indices(10, 10)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert list(first) != list(second)
    assert list(_DataOrder(10, seed=3).indices(5, 10)) == list(first[5:]) + list(second[:5])


def test_config_round_trip_and_errors():
    cfg = make_train_config("stylegan2", "data.zip", batch=64, gamma=None, gamma_resolution=1024, mirror=True)
    assert cfg.loss.r1_gamma == pytest.approx(0.0002 * 1024**2 / 64)
    assert cfg.loss.pl_weight == 2 and cfg.loss.style_mixing_prob == 0.9 and cfg.ema_kimg == 20
    assert train_config_from_dict(cfg.to_dict()) == cfg
    sg3 = make_train_config("stylegan3-t", "d", batch=32)
    assert sg3.model_overrides["G"]["magnitude_ema_beta"] == pytest.approx(0.5 ** (32 / 20_000))
    assert sg3.g_opt.lr == 0.0025 and sg3.loss.pl_weight == 0 and not math.isnan(sg3.loss.r1_gamma)
    with pytest.raises(UserInputError, match="multiple of --batch-gpu"):
        make_train_config("stylegan2", "d", batch=12, batch_gpu=8)
    with pytest.raises(UserInputError, match="Unknown --cfg"):
        make_train_config("stylegan4", "d")
    with pytest.raises(UserInputError, match="Unknown TrainConfig option"):
        train_config_from_dict({**cfg.to_dict(), "bogus": 1})

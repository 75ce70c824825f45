"""Pieces of the loop with exact expected values: EMA decay, lazy-regularisation Adam, blur, configs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import styleforge
from styleforge.training.config import make_train_config, train_config_from_dict
from styleforge.training.ema import ema_beta, update_ema
from styleforge.training.engine import DataOrder as _DataOrder
from styleforge.training.losses import StyleGANLoss, gaussian_blur
from styleforge.training.stylegan import make_optimizer as _make_optimizer
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


def test_blur_is_the_official_kernel_with_zero_padding_and_fade():
    img = torch.zeros(1, 1, 21, 21)
    img[0, 0, 10, 10] = 1
    out = gaussian_blur(img, 2.0)
    x = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp2(-(x / 2) ** 2)  # 2^(-(x/sigma)^2) over |x| <= 3 sigma
    k = k / k.sum()
    torch.testing.assert_close(out[0, 0, 10, 4:17], k * k[6])
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    corner = torch.zeros(1, 1, 21, 21)
    corner[0, 0, 0, 0] = 1
    kept = gaussian_blur(corner, 2.0).sum().item()  # zero padding: the mass outside the image is lost
    assert kept == pytest.approx(float(k[6:].sum() ** 2), rel=1e-5) and kept < 0.5
    cfg = make_train_config("stylegan3-r-tiny", "x", batch=32).loss
    loss = StyleGANLoss(torch.nn.Linear(1, 1), None, cfg)
    assert loss.blur_sigma(0) == 10 and loss.blur_sigma(100_000) == pytest.approx(5) and loss.blur_sigma(10**6) == 0
    no_fade = StyleGANLoss(torch.nn.Linear(1, 1), None, dataclasses.replace(cfg, blur_fade_kimg=0))
    assert no_fade.blur_sigma(0) == 0  # as the official loss: no fade length, no blur


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


# -- each loss term against a hand computation on a tiny network --

def _tiny_pair(cfg_name="stylegan2-tiny"):
    torch.manual_seed(0)
    G = styleforge.create_model(cfg_name, img_resolution=16, num_fp16_res=0)
    D = styleforge.create_model(cfg_name, "D", img_resolution=16, num_fp16_res=0)
    return G, D


def _grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_non_saturating_losses_match_a_hand_computation():
    G, D = _tiny_pair()
    cfg = dataclasses.replace(make_train_config("stylegan2-tiny", "x").loss, style_mixing_prob=0.0)
    loss = StyleGANLoss(G, D, cfg)
    z, c = torch.randn(4, G.z_dim), torch.zeros(4, 0)
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(7)
    stats = loss.accumulate("Gmain", None, None, z, c, gain=1, denom=8, cur_nimg=0)
    ours = _grads(G)
    G.zero_grad()
    torch.manual_seed(7)
    expected = torch.nn.functional.softplus(-D(G(z, c, noise_mode="random"), c)).sum()
    (expected / 8).backward()
    assert stats["loss/G"].item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(ours, _grads(G), strict=True):
        torch.testing.assert_close(a, b)
    D.zero_grad()
    torch.manual_seed(7)
    stats = loss.accumulate("Dmain", reals, c, z, c, gain=1, denom=4, cur_nimg=0)
    with torch.no_grad():
        torch.manual_seed(7)
        fake = G(z, c, noise_mode="random")
    hand = torch.nn.functional.softplus(D(fake, c)).sum() + torch.nn.functional.softplus(-D(reals, c)).sum()
    assert stats["loss/D"].item() == pytest.approx(hand.item(), rel=1e-5)


def test_r1_is_gamma_over_two_times_the_squared_input_gradient_with_the_lazy_gain():
    G, D = _tiny_pair()
    cfg = dataclasses.replace(make_train_config("stylegan2-tiny", "x").loss, r1_gamma=3.0)
    loss = StyleGANLoss(G, D, cfg)
    reals, c = torch.rand(4, 3, 16, 16) * 2 - 1, torch.zeros(4, 0)
    stats = loss.accumulate("Dreg", reals, c, torch.randn(4, G.z_dim), c, gain=16, denom=4, cur_nimg=0)
    ours = _grads(D)
    D.zero_grad()
    x = reals.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x, c).sum(), x, create_graph=True)
    penalty = g.square().sum([1, 2, 3]) * 1.5  # gamma / 2
    (penalty.sum() * 16 / 4).backward()
    assert stats["loss/r1_penalty"].item() == pytest.approx(penalty.sum().item(), rel=1e-5)
    for a, b in zip(ours, _grads(D), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("update", ["official", "after_minibatch"])
def test_path_length_penalty_and_its_running_mean(update):
    G, D = _tiny_pair()
    cfg = dataclasses.replace(make_train_config("stylegan2-tiny", "x").loss, style_mixing_prob=0.0,
                              pl_mean_update=update)
    loss = StyleGANLoss(G, D, cfg)
    loss.pl_mean.fill_(0.3)
    z, c = torch.randn(4, G.z_dim), torch.zeros(4, 0)
    torch.manual_seed(3)
    stats = loss.accumulate("Greg", None, None, z, c, gain=4, denom=2, cur_nimg=0)
    loss.finish_phase("Greg")
    torch.manual_seed(3)
    ws = G.mapping(z[:2], c[:2])
    img = G.synthesis(ws)
    noise = torch.randn_like(img) / 16  # y ~ N(0, I) / sqrt(H * W) for a 16 x 16 image
    (g,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    lengths = g.square().sum(2).mean(1).sqrt().detach()
    new_mean = 0.3 + 0.01 * (lengths.mean() - 0.3)
    used = new_mean if update == "official" else torch.tensor(0.3)  # the official penalty uses the updated mean
    expected = (lengths - used).square().sum() * 2.0  # pl_weight 2
    assert stats["loss/pl_penalty"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.pl_mean.item() == pytest.approx(new_mean.item(), rel=1e-6)


@pytest.mark.parametrize("per_sample", [False, True])
def test_style_mixing_switches_latents_once_at_a_random_layer(per_sample):
    G, D = _tiny_pair()
    z, c = torch.randn(64, G.z_dim), torch.zeros(64, 0)
    base = G.mapping(z, c)
    never = StyleGANLoss(G, D, dataclasses.replace(make_train_config("stylegan2-tiny", "x").loss, style_mixing_prob=0))
    assert torch.equal(never.run_G(z, c)[1], base)
    always = StyleGANLoss(G, D, dataclasses.replace(never.cfg, style_mixing_prob=1.0,
                                                    style_mixing_per_sample=per_sample))
    cuts = set()
    for _ in range(4):
        _, ws = always.run_G(z, c)
        same = (ws == base).all(dim=2)  # [N, num_ws]: which layers still use the first latent
        cut = same.float().argmin(dim=1)
        for i in range(len(z)):
            k = int(cut[i])
            assert 1 <= k < ws.shape[1] and same[i, :k].all() and not same[i, k:].any()
            assert (ws[i, k:] == ws[i, k]).all()  # one second latent for all later layers
        # Official: one crossover layer for the whole chunk; per_sample: drawn for each image.
        assert (len(set(cut.tolist())) > 2) == per_sample
        cuts |= set(cut.tolist())
    assert len(cuts) > 1  # and a new one for every chunk

"""Pivotal tuning: the tuned copy reconstructs the target better, the original is untouched, early stop works."""

from __future__ import annotations

import torch

from styleforge.inversion import projector as P
from styleforge.inversion.pti import PTIConfig, pivotal_tuning
from styleforge.utils.seeding import z_from_seed


def test_pti_improves_reconstruction_and_keeps_the_original(tiny_G, cheap_distance):
    with torch.no_grad():
        target = tiny_G(z_from_seed(7, tiny_G.z_dim), None, noise_mode="const")
    pivot = P.w_statistics(tiny_G, None, 300)[0][:, None].repeat(1, tiny_G.num_ws, 1)  # a poor pivot: w_avg
    before = {k: v.clone() for k, v in tiny_G.state_dict().items()}
    res = pivotal_tuning(tiny_G, pivot, target, cheap_distance,
                         PTIConfig(num_steps=15, learning_rate=5e-3, stop_distance=None, locality_weight=0.1))
    assert res.steps == 15
    assert res.distance_after < 0.7 * res.distance_before and res.psnr_after > res.psnr_before + 1
    assert torch.allclose(res.after, res.G.synthesis(pivot, noise_mode="const"))
    assert all(torch.equal(v, tiny_G.state_dict()[k]) for k, v in before.items())
    stopped = pivotal_tuning(tiny_G, pivot, target, cheap_distance, PTIConfig(num_steps=30, stop_distance=1e9))
    assert stopped.steps == 0 and torch.equal(stopped.before, stopped.after)

"""Fixtures of the inversion tests: a tiny generator with non-trivial images and a cheap perceptual distance."""

from __future__ import annotations

import pytest
import torch

import styleforge
from styleforge.feature_nets.efficientnet_lite import EfficientNetLite0
from styleforge.inversion.distance import Lite0Distance


def make_tiny_generator(seed: int = 0, name: str = "stylegan2-tiny", **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    G = styleforge.create_model(name, **overrides).eval()
    with torch.no_grad():
        for p in G.parameters():  # move biases and noise strengths off zero so that images are not flat
            p.add_(0.05 * torch.randn_like(p))
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, G.z_dim), None)[:, 0].mean(0))
    return G.requires_grad_(False)


def make_cheap_distance(seed: int = 0) -> Lite0Distance:
    """EfficientNet-lite0 features with random weights at 32 px: the real distance's code path, in milliseconds."""
    torch.manual_seed(seed)
    return Lite0Distance(EfficientNetLite0().eval(), min_size=32, max_size=32)


@pytest.fixture(scope="session")
def tiny_G():
    return make_tiny_generator()


@pytest.fixture(scope="session")
def cheap_distance():
    return make_cheap_distance()

"""Fixtures of the inversion tests: a tiny generator with non-trivial images and a cheap perceptual distance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import styleforge
from styleforge.inversion.distance import PerceptualDistance


def make_tiny_generator(seed: int = 0, name: str = "stylegan2-tiny", **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    G = styleforge.create_model(name, **overrides).eval()
    with torch.no_grad():
        for p in G.parameters():  # move biases and noise strengths off zero so that images are not flat
            p.add_(0.05 * torch.randn_like(p))
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, G.z_dim), None)[:, 0].mean(0))
    return G.requires_grad_(False)


class TinyFeatureDistance(PerceptualDistance):
    """A test double for the perceptual distance: two random 3x3 convolutions (ReLU), unit-normalised over channels
    per layer like LPIPS, plus the pixels. The projector and PTI tests exercise the optimisers with it in
    milliseconds; the real distances are tested in tests/feature_nets and by the builtin:emoji projection test."""

    name = "tiny"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(16, 3, 3, 3, generator=g) / 3
        self.w2 = torch.randn(16, 16, 3, 3, generator=g) / 12
        self.description = "test double"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        f1 = F.relu(F.conv2d(images, self.w1, padding=1))
        f2 = F.relu(F.conv2d(F.avg_pool2d(f1, 2), self.w2, padding=1))
        parts = [images.flatten(1) / images[0].numel() ** 0.5]
        for f in (f1, f2):
            unit = f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            parts.append(unit.flatten(1) / (f.shape[2] * f.shape[3]) ** 0.5)
        return torch.cat(parts, dim=1)


def make_cheap_distance(seed: int = 0) -> TinyFeatureDistance:
    return TinyFeatureDistance(seed)


@pytest.fixture(scope="session")
def tiny_G():
    return make_tiny_generator()


@pytest.fixture(scope="session")
def cheap_distance():
    return make_cheap_distance()

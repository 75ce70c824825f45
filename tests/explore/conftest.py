"""Fixtures shared by the explorer tests: tiny networks, a directions file, and the [ui]-extra guard."""

from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

import styleforge
from styleforge.explore.render import Explorer
from tests.conftest import IN_CI


def require(module: str):
    """Import ``module`` of the [ui] extra; skip without it, except in CI where it fails."""
    try:
        return importlib.import_module(module)
    except ImportError:
        msg = f"{module} is missing (pip install -e '.[ui]')"
        if IN_CI:
            pytest.fail(msg + "; in CI the [ui] extra must be installed")
        pytest.skip(msg)


def decode(data: bytes) -> np.ndarray:
    """Encoded frame -> uint8 pixels ``[H, W, C]``."""
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def perturbed(name: str, **overrides) -> torch.nn.Module:
    """A tiny registered network with its zero-initialised biases moved, so that images are not flat."""
    torch.manual_seed(0)
    G = styleforge.create_model(name, **overrides).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return G.requires_grad_(False)


def write_directions(path, w_dim: int, k: int = 3, layers=None, seed: int = 0) -> None:
    """A valid dirs.npz: ``k`` orthonormal directions, descending values, method ``"test"``."""
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(w_dim, k))
    arrays = {"directions": q.T.astype(np.float32), "values": np.linspace(3, 1, k), "method": np.array("test")}
    if layers is not None:
        arrays["layers"] = np.asarray(layers, dtype=np.int64)
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def dirs_file(tmp_path_factory):
    """Directions for the built-in emoji network (w_dim 32), moving ws 0..3 only."""
    path = tmp_path_factory.mktemp("dirs") / "dirs.npz"
    write_directions(path, w_dim=32, k=3, layers=[0, 1, 2, 3])
    return path


@pytest.fixture(scope="module")
def explorer(dirs_file):
    """builtin:emoji, a tiny StyleGAN3-T and a tiny conditional StyleGAN2, with one directions file."""
    nets = {"sg3": perturbed("stylegan3-t-tiny"), "cond": perturbed("stylegan2-tiny", c_dim=3)}
    return Explorer(["builtin:emoji"], directions=[dirs_file], preloaded=nets)

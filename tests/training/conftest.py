"""Fixtures of the training tests: a toy dataset of 16 coloured 16 px images and a tiny config factory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from styleforge.training.config import make_train_config

TOY_IMAGES = 16
TOY_RES = 16


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """A folder of 16 RGB 16x16 images: a coloured disc at a random place on a random background."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:TOY_RES, :TOY_RES]
    for i in range(TOY_IMAGES):
        img = np.empty((TOY_RES, TOY_RES, 3), dtype=np.uint8)
        img[:] = rng.integers(0, 256, 3)
        cy, cx, r = rng.integers(4, 12), rng.integers(4, 12), rng.integers(2, 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(root / f"img{i:03d}.png")
    return root


def tiny_config(data, cfg="stylegan2-tiny", ticks=2, batch=4, tick_images=8, **loss_overrides):
    """A run of ``ticks`` ticks of ``tick_images`` images each, lazy intervals shortened so every phase runs."""
    config = make_train_config(cfg, str(data), kimg=ticks * tick_images / 1000, batch=batch,
                               tick=tick_images / 1000, snap=1, image_snap=1, aug="ada", p=0.2,
                               batch_gpu=loss_overrides.pop("batch_gpu", None))
    loss = dataclasses.replace(config.loss, r1_interval=2, pl_interval=2, **loss_overrides)
    return dataclasses.replace(config, loss=loss, grid_size=8,
                               augment=dataclasses.replace(config.augment, interval=1, ada_kimg=0.1))

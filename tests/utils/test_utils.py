import json
import os

import numpy as np
import pytest

from styleforge.utils.images import make_grid
from styleforge.utils.io import WeightsNotFoundError, atomic_write, atomic_write_json, find_weight_file
from styleforge.utils.seeding import parse_seeds, z_from_seed


def test_parse_seeds():
    assert parse_seeds("0-3,12") == [0, 1, 2, 3, 12]
    assert parse_seeds("7") == [7]
    for bad in ["", "a", "5-2", "1,,x"]:
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_z_from_seed_matches_official_convention():
    z = z_from_seed(3, 8)
    assert np.array_equal(z.numpy(), np.random.RandomState(3).randn(1, 8).astype(np.float32))


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as f:
            f.write("half")
            raise RuntimeError("crash")
    assert json.loads(p.read_text()) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_write_uses_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "b.json", [1])
    finally:
        os.umask(old)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644


def test_find_weight_file_order_and_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.pt"
    f.write_bytes(b"x")
    monkeypatch.setenv("SF_TEST_W", str(f))
    assert find_weight_file("test", ["w.pt"], env_var="SF_TEST_W") == f
    monkeypatch.delenv("SF_TEST_W")
    with pytest.raises(WeightsNotFoundError, match="SF_TEST_W"):
        find_weight_file("test", ["w.pt"], env_var="SF_TEST_W")


def test_make_grid_layout():
    imgs = np.stack([np.full((2, 2, 1), i, np.uint8) for i in range(5)])
    g = make_grid(imgs, cols=3)
    assert g.shape == (4, 6, 1)
    assert g[2, 0, 0] == 3 and g[3, 5, 0] == 255

"""SeFa, GANSpace and boundary directions, the dirs.npz format, edits and style mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styleforge.inversion import directions as D
from styleforge.inversion import editing as E
from styleforge.utils.errors import UserInputError


def test_sefa_orthonormal_ordered_and_the_top_eigenvector(tiny_G):
    d = D.sefa_directions(tiny_G, num=10)
    v = d.directions.astype(np.float64)
    assert v.shape == (10, tiny_G.w_dim) and d.directions.dtype == np.float32
    assert np.allclose(v @ v.T, np.eye(10), atol=1e-5)
    assert np.all(np.diff(d.values) <= 0)
    # layers: the ws read by the modulated convs (not the last tRGB row)
    assert d.layers.tolist() == list(range(tiny_G.num_ws - 1))
    # the first direction maximises ||A n|| over unit n, A = row-normalised stacked affines
    A = np.concatenate([a.numpy() for _, a in D.style_affines(tiny_G)])
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    top = np.linalg.norm(A @ v[0])
    for n in np.random.RandomState(0).randn(50, tiny_G.w_dim):
        assert np.linalg.norm(A @ (n / np.linalg.norm(n))) <= top + 1e-6
    assert d.values[0] == pytest.approx(top**2, rel=1e-6)


def test_sefa_layer_subset_and_errors(tiny_G):
    d = D.sefa_directions(tiny_G, num=3, layers=[0, 1])
    assert d.layers.tolist() == [0, 1]
    assert not np.allclose(np.abs(d.directions[0]), np.abs(D.sefa_directions(tiny_G, 1).directions[0]), atol=1e-3)
    with pytest.raises(UserInputError, match="no style-modulated"):
        D.sefa_directions(tiny_G, layers=[tiny_G.num_ws - 1])


def test_sefa_on_stylegan3():
    from tests.inversion.conftest import make_tiny_generator

    G = make_tiny_generator(name="stylegan3-t-tiny")
    d = D.sefa_directions(G, num=4)
    assert d.layers.tolist() == list(range(1, G.num_ws - 1))  # ws[0] feeds the input, the last row tRGB


def test_ganspace_decreasing_variance_equals_pca(tiny_G):
    d = D.ganspace_directions(tiny_G, num=8, num_samples=3000, seed=3, batch_size=1000)
    assert np.all(np.diff(d.values) <= 0) and d.values[-1] >= 0
    v = d.directions.astype(np.float64)
    assert np.allclose(v @ v.T, np.eye(8), atol=1e-5)
    z = torch.from_numpy(np.random.RandomState(3).randn(3000, tiny_G.z_dim)).float()
    w = tiny_G.mapping(z, None)[:, 0].double().numpy()
    evals, evecs = np.linalg.eigh(np.cov(w, rowvar=False))
    assert np.allclose(d.values, evals[::-1][:8], rtol=1e-4)
    assert np.allclose(np.abs(v[0] @ evecs[:, -1]), 1.0, atol=1e-4)
    share = d.values / np.cov(w, rowvar=False).trace()
    assert share[0] > share[1] > share[-1]


@pytest.mark.parametrize("solver", ["svm", "logistic"])
def test_boundary_recovers_a_known_normal(solver):
    rng = np.random.RandomState(0)
    normal = rng.randn(16)
    normal /= np.linalg.norm(normal)
    w = rng.randn(600, 16) * rng.uniform(0.5, 2.0, 16) + 3.0
    labels = ((w - 3.0) @ normal > 0.1).astype(int)
    d = D.boundary_direction(w, labels, solver=solver)
    assert d.directions.shape == (1, 16)
    assert float(d.directions[0] @ normal) > 0.95
    assert d.values[0] > 0.9  # held-out accuracy
    with pytest.raises(UserInputError, match="0 or 1"):
        D.boundary_direction(w, labels * 2)


def test_dirs_npz_format_round_trip(tmp_path, tiny_G):
    d = D.sefa_directions(tiny_G, num=5)
    path = D.save_directions(tmp_path / "dirs.npz", d)
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == ["directions", "layers", "method", "values"]
        assert f["directions"].dtype == np.float32 and f["directions"].shape == (5, tiny_G.w_dim)
        assert f["values"].dtype == np.float64 and str(f["method"]) == "sefa"
        assert f["layers"].dtype.kind == "i"
    back = D.load_directions(path)
    assert np.array_equal(back.directions, d.directions) and back.method == "sefa"
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(UserInputError, match="not a directions file"):
        D.load_directions(tmp_path / "bad.npz")


def test_edit_strength_zero_is_exact_and_layers_are_respected(tiny_G):
    ws = E.ws_from_seeds(tiny_G, [0, 1])
    n = D.sefa_directions(tiny_G, 1).directions[0]
    assert torch.equal(E.apply_direction(ws, n, 0.0), ws)
    images = E.edit_images(tiny_G, ws, n, [-2.0, 0.0, 2.0])
    assert images.shape == (2, 3, 3, 16, 16)
    assert torch.equal(images[:, 1], tiny_G.synthesis(ws, noise_mode="const"))
    assert not torch.allclose(images[:, 0], images[:, 1])
    moved = E.apply_direction(ws, n, 2.0, layers=[1, 2])
    assert torch.equal(moved[:, [0, 3, 4, 5]], ws[:, [0, 3, 4, 5]])
    assert torch.allclose(moved[:, 1] - ws[:, 1], 2.0 * torch.from_numpy(n).expand(2, -1), atol=1e-6)
    gs = D.Directions(np.eye(1, tiny_G.w_dim, dtype=np.float32), np.array([4.0]), "ganspace")
    assert E.edit_strengths(gs, 0, [1.0, -2.0]).tolist() == [2.0, -4.0]  # sigma units
    assert E.parse_strengths("-3:3:7") == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]


def test_style_mix_grid_layout(tiny_G):
    grid = E.style_mix_grid(tiny_G, [10, 11], [20, 21, 22], styles=[0, 1])
    assert grid.shape == (12, 3, 16, 16)
    assert torch.equal(grid[0], torch.ones_like(grid[0]))
    row_ws, col_ws = E.ws_from_seeds(tiny_G, [10, 11]), E.ws_from_seeds(tiny_G, [20, 21, 22])
    assert torch.allclose(grid[1], tiny_G.synthesis(col_ws[:1], noise_mode="const")[0], atol=1e-5)
    assert torch.allclose(grid[4], tiny_G.synthesis(row_ws[:1], noise_mode="const")[0], atol=1e-5)
    mixed = row_ws[1:2].clone()
    mixed[:, [0, 1]] = col_ws[2:3, [0, 1]]
    assert torch.allclose(grid[11], tiny_G.synthesis(mixed, noise_mode="const")[0], atol=1e-5)

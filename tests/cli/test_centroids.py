"""Multi-modal truncation: k-means of W, nearest-centroid truncation, ``styleforge centroids`` and
``generate/video --centroids``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import styleforge
from styleforge.centroids import kmeans, load_centroids, sample_w, truncate_to_centroids
from styleforge.cli.main import cli
from styleforge.generation import generate_images
from styleforge.utils.errors import UserInputError


@pytest.fixture(scope="module")
def xl_net(tmp_path_factory):
    G = styleforge.create_model("stylegan-xl-stem-tiny").eval()
    return styleforge.save(tmp_path_factory.mktemp("net") / "xl", G_ema=G), G


def test_kmeans_finds_separated_clusters_deterministically():
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([m + 0.1 * torch.randn(200, 2, generator=gen) for m in means])
    found = kmeans(points, 3, seed=1)
    order = [int(torch.cdist(m[None], found).argmin()) for m in means]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(found[order], means, atol=0.05, rtol=0)
    assert torch.equal(found, kmeans(points, 3, seed=1))
    with pytest.raises(UserInputError, match="--k"):
        kmeans(points, 601)


def test_truncation_pulls_toward_the_centroid_nearest_to_the_first_w():
    cents = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    ws = torch.tensor([[[9.0, 9.0], [0.0, 0.0]], [[1.0, 0.0], [5.0, 5.0]]])  # [2 samples, 2 layers, 2]
    assert torch.equal(truncate_to_centroids(ws, cents, 1.0), ws)
    zero = truncate_to_centroids(ws, cents, 0.0)
    assert torch.equal(zero[0], cents[1].expand(2, 2)) and torch.equal(zero[1], cents[0].expand(2, 2))
    torch.testing.assert_close(truncate_to_centroids(ws, cents, 0.5)[1, 1], torch.tensor([2.5, 2.5]))


def test_centroids_cli_and_generate_video_with_them(xl_net, tmp_path):
    path, G = xl_net
    runner = CliRunner()
    out = runner.invoke(cli, ["centroids", "--network", str(path), "--num", "200", "--k", "4", "--out",
                              str(tmp_path / "c.npy"), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    cents = load_centroids(tmp_path / "c.npy", G.w_dim)
    assert cents.shape == (4, G.w_dim)
    # Each centroid is the mean of its cluster's W samples.
    w = sample_w(G, 200)
    nearest = torch.cdist(w, cents).argmin(dim=1)
    for j in range(4):
        torch.testing.assert_close(w[nearest == j].mean(0), cents[j], atol=1e-4, rtol=0)
    # psi 0 with one centroid: every seed gives the same image.
    np.save(tmp_path / "one.npy", cents[:1].numpy())
    imgs = generate_images(G, [0, 1], truncation_psi=0.0, class_idx=2, centroids=str(tmp_path / "one.npy"))
    assert torch.allclose(imgs[0], imgs[1], atol=1e-5)
    out = runner.invoke(cli, ["generate", "--network", str(path), "--seeds", "0-1", "--class", "2", "--trunc", "0.5",
                              "--centroids", str(tmp_path / "c.npy"), "--outdir", str(tmp_path / "img"),
                              "--device", "cpu"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["video", "--network", str(path), "--seeds", "0-1", "--class", "2", "--frames-per-seed",
                              "2", "--trunc", "0.5", "--centroids", str(tmp_path / "c.npy"), "--out",
                              str(tmp_path / "v.gif"), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "v.gif").is_file()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, G.w_dim + 1), dtype=np.float32))
    with pytest.raises(UserInputError, match="dimensions"):
        load_centroids(bad, G.w_dim)

"""Interpolation and translation/rotation videos: latent paths, frames, and the MP4/GIF writers."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

import styleforge
from styleforge.analysis import video as video_mod
from styleforge.analysis.video import VideoOptions, _interpolate_path, render_video, video_frames, write_video
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import to_uint8
from styleforge.utils.seeding import z_from_seed
from tests.conftest import require_module


@pytest.mark.parametrize("kind", ["linear", "cubic"])
@pytest.mark.parametrize("loop", [True, False])
def test_path_passes_through_keyframes(kind, loop):
    keys = np.random.RandomState(0).randn(4, 2, 3)
    fpk = 5
    n = 4 * fpk if loop else 3 * fpk + 1
    path = _interpolate_path(keys, n, fpk, kind, loop)
    assert path.shape == (n, 2, 3)
    np.testing.assert_allclose(path[::fpk][:4], keys, atol=1e-12)
    if loop:  # the step from the last frame back to frame 0 is as small as the others
        steps = np.abs(np.diff(np.concatenate([path, path[:1]]), axis=0)).max(axis=(1, 2))
        assert steps[-1] < 2 * np.median(steps)


@pytest.fixture(scope="module")
def G_xl():
    torch.manual_seed(0)
    return styleforge.create_model("stylegan-xl-stem-tiny").eval()


def test_interpolation_frames_grid_and_keyframes(G_xl):
    opts = VideoOptions(seeds=(0, 1, 2, 3), frames_per_seed=3, grid=(1, 2), class_idx=4)
    frames = list(video_frames(G_xl, opts))
    assert len(frames) == opts.num_frames == 2 * 3
    assert frames[0].shape == (16, 32, 3) and frames[0].dtype == np.uint8
    # Frame 0 shows seed 0 (left cell) and seed 2 (right cell), each mapped with class 4.
    c = torch.zeros(2, G_xl.c_dim)
    c[:, 4] = 1
    z = torch.cat([z_from_seed(0, G_xl.z_dim), z_from_seed(2, G_xl.z_dim)])
    with torch.no_grad():
        expected = to_uint8(G_xl(z, c))
    np.testing.assert_array_equal(frames[0][:, :16], expected[0])
    np.testing.assert_array_equal(frames[0][:, 16:], expected[1])
    assert not np.array_equal(frames[1], frames[0])


def test_z_space_and_no_loop(G_xl):
    opts = VideoOptions(
        seeds=(5, 6), frames_per_seed=4, space="z", loop=False, interpolation="linear", class_idx=0
    )
    frames = list(video_frames(G_xl, opts))
    assert len(frames) == 5
    c = torch.zeros(1, G_xl.c_dim)
    c[0, 0] = 1
    with torch.no_grad():
        last = to_uint8(G_xl(z_from_seed(6, G_xl.z_dim), c))[0]
    np.testing.assert_array_equal(frames[-1], last)


@pytest.mark.parametrize("mode", ["translate", "rotate"])
def test_transform_sweep(G_xl, mode):
    opts = VideoOptions(seeds=(7,), frames_per_seed=8, mode=mode, class_idx=1)
    frames = list(video_frames(G_xl, opts))
    assert len(frames) == 8
    c = torch.zeros(1, G_xl.c_dim)
    c[0, 1] = 1
    with torch.no_grad():
        plain = to_uint8(G_xl(z_from_seed(7, G_xl.z_dim), c))[0]
    np.testing.assert_array_equal(frames[0], plain)  # the sweep starts at the identity transform
    assert np.abs(frames[4].astype(int) - plain.astype(int)).mean() > 1.0


def test_option_errors(G_xl):
    with pytest.raises(UserInputError, match="split evenly"):
        VideoOptions(seeds=(0, 1, 2), grid=(1, 2))
    with pytest.raises(UserInputError, match="at least 2 seeds"):
        VideoOptions(seeds=(0, 1), grid=(1, 2))
    with pytest.raises(UserInputError, match="class_idx"):
        next(video_frames(G_xl, VideoOptions(seeds=(0, 1))))
    G2 = styleforge.create_model("stylegan2-tiny").eval()
    with pytest.raises(UserInputError, match="StyleGAN3"):
        next(video_frames(G2, VideoOptions(seeds=(0,), mode="rotate")))


def _frames(n: int, h: int = 15, w: int = 9) -> list[np.ndarray]:
    return [np.full((h, w, 3), 20 * i, dtype=np.uint8) for i in range(n)]


def test_gif_fallback_without_imageio(tmp_path, monkeypatch):
    monkeypatch.setattr(video_mod, "_import_imageio", lambda: None)
    res = write_video(tmp_path / "clip.mp4", iter(_frames(5)), fps=25)
    assert res.path == tmp_path / "clip.gif" and res.format == "gif" and "styleforge[video]" in res.note
    assert not (tmp_path / "clip.mp4").exists()
    with Image.open(res.path) as im:
        assert im.n_frames == 5 and im.info["duration"] == 40
    with pytest.raises(UserInputError, match=".mp4 or .gif"):
        write_video(tmp_path / "clip.avi", iter(_frames(1)))


class _FakeWriter:
    def __init__(self, path: str, log: dict) -> None:
        self.path, self.log = path, log
        log["frames"] = []

    def append_data(self, frame: np.ndarray) -> None:
        self.log["frames"].append(frame.shape)

    def close(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"fake mp4")
        self.log["closed"] = True


def test_mp4_through_imageio_is_atomic(tmp_path, monkeypatch):
    log: dict = {}

    def get_writer(path, **kwargs):
        log["kwargs"] = kwargs
        log["tmp"] = path
        return _FakeWriter(path, log)

    monkeypatch.setattr(video_mod, "_import_imageio", lambda: types.SimpleNamespace(get_writer=get_writer))
    res = write_video(tmp_path / "clip.mp4", iter(_frames(3)), fps=12)
    assert res.format == "mp4" and res.num_frames == 3 and res.note == ""
    assert (tmp_path / "clip.mp4").read_bytes() == b"fake mp4"
    assert log["tmp"] != str(tmp_path / "clip.mp4") and log["closed"]
    assert log["frames"] == [(16, 10, 3)] * 3  # padded to even sizes for H.264
    assert log["kwargs"]["fps"] == 12 and log["kwargs"]["codec"] == "libx264"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary file left


def test_real_mp4_round_trip(tmp_path):
    """With the [video] extra installed, the encoded frames decode back close to what went in."""
    require_module("imageio_ffmpeg", "video")
    iio = require_module("imageio.v3", "video")
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (40, 120, 200)]
    res = write_video(tmp_path / "clip.mp4", iter(frames), fps=10)
    assert res.format == "mp4" and res.num_frames == 3
    decoded = iio.imread(res.path)
    assert decoded.shape == (3, 16, 16, 3)
    assert np.abs(decoded.mean(axis=(1, 2, 3)) - [40, 120, 200]).max() < 8


def test_render_video_gif(G_xl, tmp_path):
    res = render_video(G_xl, tmp_path / "v.gif", VideoOptions(seeds=(0, 1), frames_per_seed=2, class_idx=0))
    assert res.num_frames == 4
    with Image.open(res.path) as im:
        assert im.n_frames == 4 and im.size == (16, 16)

"""Videos from a generator: latent interpolation, and StyleGAN3 translation/rotation sweeps.

- ``mode="interpolate"``: the seeds are keyframes; the latent path between them is a cubic spline (periodic
  when the video loops) or piecewise linear, in W (default: each seed is mapped once, then the ``ws`` are
  interpolated) or in Z (the ``z`` are interpolated and every frame is mapped). A grid of ``rows x cols``
  cells shows several paths at once; cell ``k`` takes the ``k``-th consecutive block of
  ``len(seeds) / (rows * cols)`` seeds.
- ``mode="translate"`` / ``"rotate"`` (StyleGAN3 and StyleGAN-XL only): the input transform of the synthesis
  network is swept, moving the content along a circle of radius ``translate_amplitude`` (in image units) or
  rotating it by a full turn, while the latent follows the same keyframe path as above (it stays fixed with
  one seed per cell). With an alias-free generator the texture moves with the content; where it stays put
  ("sticks to the screen") the network is aliasing. See Karras et al., "Alias-Free Generative Adversarial
  Networks" (2021).

Output: MP4 (H.264) through the optional ``imageio`` + ``imageio-ffmpeg`` packages (``pip install
styleforge[video]``). Without them, or when the path ends in ``.gif``, an animated GIF is written with PIL;
the result's ``note`` says so. Files are written atomically.
"""

from __future__ import annotations

import importlib
import inspect
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.interpolate
import torch
from PIL import Image

from styleforge.ops.transforms import transform_matrix
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import make_grid, to_uint8
from styleforge.utils.io import atomic_path, atomic_write_bytes
from styleforge.utils.seeding import z_from_seed

__all__ = ["VideoOptions", "VideoResult", "video_frames", "write_video", "render_video", "MODES"]

MODES = ("interpolate", "translate", "rotate")
SPACES = ("w", "z")
INTERPOLATIONS = ("cubic", "linear")
#: GIF frame delays are stored in units of 10 ms
_GIF_DELAY_UNIT_MS = 10
#: H.264 with 4:2:0 chroma needs even frame sizes
_H264_BLOCK = 2
_DEGREES_PER_TURN = 360.0


@dataclass(frozen=True)
class VideoOptions:
    """Settings of :func:`video_frames` / :func:`render_video`.

    Attributes:
        seeds: keyframe seeds (latents ``z = RandomState(seed).randn(z_dim)``, as the official scripts).
        frames_per_seed: frames per keyframe transition.
        mode: ``"interpolate"``, ``"translate"`` or ``"rotate"``.
        space: interpolate in ``"w"`` (default) or ``"z"``.
        interpolation: ``"cubic"`` (smooth spline through the keyframes) or ``"linear"``.
        grid: ``(rows, cols)`` of simultaneous paths.
        loop: return to the first keyframe at the end (seamless loop).
        truncation_psi: truncation towards ``w_avg``.
        noise_mode: ``"const"``, ``"random"`` or ``"none"``.
        class_idx: class of a conditional network (required when ``c_dim > 0``); a tuple of classes for a
            multi-label one.
        cond_vector: the attribute values ``c`` of a network conditioned on continuous labels.
        translate_amplitude: radius of the circular translation in ``"translate"`` mode, in image units.
        fps: frames per second of the written video.
        centroids: a ``.npy`` of W centroids (``styleforge centroids``): each keyframe's w is truncated toward
            its nearest centroid (multi-modal truncation, as the official StyleGAN-XL ``gen_video.py``), then
            interpolated; needs ``space="w"``.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3)
    frames_per_seed: int = 30
    mode: str = "interpolate"
    space: str = "w"
    interpolation: str = "cubic"
    grid: tuple[int, int] = (1, 1)
    loop: bool = True
    truncation_psi: float = 1.0
    noise_mode: str = "const"
    class_idx: int | tuple[int, ...] | None = None
    translate_amplitude: float = 0.125
    fps: float = 30.0
    centroids: str | None = None
    cond_vector: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserInputError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.space not in SPACES:
            raise UserInputError(f"space must be 'w' or 'z', got {self.space!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise UserInputError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}."
            )
        if self.frames_per_seed < 1:
            raise UserInputError(f"frames_per_seed must be at least 1, got {self.frames_per_seed}.")
        rows, cols = self.grid
        if rows < 1 or cols < 1:
            raise UserInputError(f"grid must be (rows, cols) with positive sizes, got {self.grid}.")
        cells = rows * cols
        if not self.seeds or len(self.seeds) % cells:
            raise UserInputError(
                f"{len(self.seeds)} seeds cannot be split evenly over a {rows}x{cols} grid; give a "
                f"multiple of {cells} seeds."
            )
        if self.mode == "interpolate" and len(self.seeds) // cells < 2:
            raise UserInputError(
                f"Interpolation needs at least 2 seeds per grid cell ({2 * cells} seeds for a "
                f"{rows}x{cols} grid), got {len(self.seeds)}."
            )
        if self.fps <= 0:
            raise UserInputError(f"fps must be positive, got {self.fps}.")
        if self.centroids is not None and self.space != "w":
            raise UserInputError("Multi-modal truncation (--centroids) truncates the keyframes in W: use --space w.")

    @property
    def keyframes_per_cell(self) -> int:
        return len(self.seeds) // (self.grid[0] * self.grid[1])

    @property
    def num_frames(self) -> int:
        """Number of frames: ``K * frames_per_seed`` if looping, else ``(K - 1) * frames_per_seed + 1``."""
        k = self.keyframes_per_cell
        if k == 1:
            return self.frames_per_seed
        return k * self.frames_per_seed if self.loop else (k - 1) * self.frames_per_seed + 1


@dataclass(frozen=True)
class VideoResult:
    """What :func:`render_video` wrote: the path (``.gif`` if it fell back), frame count, format, a note."""

    path: Path
    num_frames: int
    format: str
    note: str = ""


def _labels(G: torch.nn.Module, n: int, class_idx: int | tuple[int, ...] | None, device: torch.device,
            cond_vector: tuple[float, ...] | None = None) -> torch.Tensor:
    encoding = getattr(getattr(G, "config", None), "cond_encoding", "class")
    if cond_vector is not None or isinstance(class_idx, tuple) or encoding != "class":
        from styleforge.generation import make_labels  # multi-hot or continuous c (styleforge.data.labels)

        return make_labels(G, class_idx, n, device, cond_vector=cond_vector)
    c_dim = int(getattr(G, "c_dim", 0))
    c = torch.zeros(n, c_dim, device=device)
    if c_dim > 0:
        if class_idx is None:
            raise UserInputError(
                f"The network is conditional ({c_dim} classes): choose a class with class_idx."
            )
        if not 0 <= class_idx < c_dim:
            raise UserInputError(f"class_idx must be in [0, {c_dim - 1}], got {class_idx}.")
        c[:, class_idx] = 1
    elif class_idx is not None:
        raise UserInputError("class_idx was given, but the network is unconditional; leave it out.")
    return c


def _interpolate_path(
    keys: np.ndarray, num_frames: int, frames_per_key: int, kind: str, loop: bool
) -> np.ndarray:
    """Sample a path through ``keys [K, ...]`` at ``num_frames`` times; keyframe k sits at frame k * fpk."""
    k = keys.shape[0]
    if k == 1:
        return np.repeat(keys, num_frames, axis=0)
    t = np.arange(num_frames) / frames_per_key  # position in keyframe units
    flat = keys.reshape(k, -1)
    knots = np.arange(k + 1 if loop else k, dtype=np.float64)
    values = np.concatenate([flat, flat[:1]]) if loop else flat
    if kind == "linear":
        out = np.stack([np.interp(t, knots, values[:, j]) for j in range(values.shape[1])], axis=1)
    else:
        bc = "periodic" if loop else "not-a-knot"
        if not loop and k == 2:
            bc = "natural"
        out = scipy.interpolate.CubicSpline(knots, values, axis=0, bc_type=bc)(t)
    return out.reshape(num_frames, *keys.shape[1:])


def _supports_transform(G: torch.nn.Module) -> bool:
    synthesis = getattr(G, "synthesis", None)
    if synthesis is None:
        return False
    try:
        return "transform" in inspect.signature(synthesis.forward).parameters
    except (TypeError, ValueError):
        return False


def _frame_transform(options: VideoOptions, frame: int) -> torch.Tensor | None:
    """The network-side input transform of ``frame`` (``None`` in interpolate mode)."""
    phase = frame / options.num_frames  # one full circle / turn over the video
    if options.mode == "translate":
        angle = 2 * math.pi * phase
        a = options.translate_amplitude
        return transform_matrix(translate=(a * math.cos(angle) - a, a * math.sin(angle)))
    if options.mode == "rotate":
        return transform_matrix(rotate=_DEGREES_PER_TURN * phase)
    return None


def video_frames(
    G: torch.nn.Module, options: VideoOptions, device: torch.device | str = "cpu"
) -> Iterator[np.ndarray]:
    """Yield the video frames, uint8 ``[H, W, 3]`` (a ``rows x cols`` grid of ``G``'s images).

    Args:
        G: a generator with ``mapping`` and ``synthesis`` (official call convention). ``"translate"`` and
            ``"rotate"`` need a synthesis network that takes ``transform=`` (StyleGAN3, StyleGAN-XL).
        options: see :class:`VideoOptions`.
        device: where ``G`` runs.
    """
    device = torch.device(device)
    if options.mode != "interpolate" and not _supports_transform(G):
        raise UserInputError(
            f"--mode {options.mode} needs a StyleGAN3 or StyleGAN-XL generator (an input transform); "
            f"this network ({type(G).__name__}) has none. Use --mode interpolate."
        )
    rows, cols = options.grid
    cells = rows * cols
    k = options.keyframes_per_cell
    num_frames = options.num_frames
    z_dim = int(G.z_dim)
    zs = np.stack([z_from_seed(s, z_dim).numpy()[0] for s in options.seeds]).reshape(cells, k, z_dim)
    c_cell = _labels(G, cells, options.class_idx, device, options.cond_vector)
    map_kwargs = {"truncation_psi": options.truncation_psi}

    with torch.no_grad():
        if options.space == "w":
            z_all = torch.from_numpy(zs.reshape(cells * k, z_dim)).to(device)
            if options.centroids is None:
                ws = G.mapping(z_all, c_cell.repeat_interleave(k, dim=0), **map_kwargs).cpu().numpy()
            else:
                from styleforge.centroids import load_centroids, truncate_to_centroids

                ws = G.mapping(z_all, c_cell.repeat_interleave(k, dim=0), truncation_psi=1.0)
                cents = load_centroids(options.centroids, int(G.w_dim)).to(device)
                ws = truncate_to_centroids(ws, cents, options.truncation_psi).cpu().numpy()
            ws = ws.reshape(cells, k, *ws.shape[1:])
            paths = [
                _interpolate_path(
                    ws[i], num_frames, options.frames_per_seed, options.interpolation, options.loop
                )
                for i in range(cells)
            ]
        else:
            paths = [
                _interpolate_path(
                    zs[i], num_frames, options.frames_per_seed, options.interpolation, options.loop
                )
                for i in range(cells)
            ]
        path = np.stack(paths, axis=1)  # [frames, cells, ...]
        for frame in range(num_frames):
            x = torch.from_numpy(path[frame]).to(device=device, dtype=torch.float32)
            frame_ws = x if options.space == "w" else G.mapping(x, c_cell, **map_kwargs)
            kwargs: dict[str, Any] = {"noise_mode": options.noise_mode}
            transform = _frame_transform(options, frame)
            if transform is not None:
                kwargs["transform"] = transform.to(device)
            img = G.synthesis(frame_ws, **kwargs)
            tiles = to_uint8(img)
            if tiles.shape[-1] == 1:
                tiles = np.repeat(tiles, 3, axis=-1)
            yield make_grid(tiles, cols=cols)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    ph, pw = (-h) % _H264_BLOCK, (-w) % _H264_BLOCK
    return np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else frame


def _write_gif(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    delay = max(_GIF_DELAY_UNIT_MS, round(1000 / fps / _GIF_DELAY_UNIT_MS) * _GIF_DELAY_UNIT_MS)
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=delay, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def _write_mp4(path: Path, frames: Iterator[np.ndarray], fps: float, imageio: Any) -> int:
    """Stream frames into an H.264 MP4 via imageio-ffmpeg (a temporary file, moved into place at the end)."""
    count = 0
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=1
        )
        try:
            for frame in frames:
                writer.append_data(_pad_even(frame))
                count += 1
        finally:
            writer.close()
    return count


def _import_imageio() -> Any | None:
    """``imageio.v2`` when imageio and imageio-ffmpeg are installed, else ``None``."""
    try:
        importlib.import_module("imageio_ffmpeg")
        return importlib.import_module("imageio.v2")
    except ImportError:
        return None


def write_video(path: str | os.PathLike, frames: Iterator[np.ndarray], fps: float = 30.0) -> VideoResult:
    """Write uint8 ``[H, W, 3]`` frames as MP4 (imageio-ffmpeg) or GIF (PIL: ``.gif`` paths and fallback).

    Returns:
        The path actually written (``.gif`` instead of ``.mp4`` when imageio-ffmpeg is missing), with a note.
    """
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise UserInputError(f"The video path must end in .mp4 or .gif, got {path.name!r}.")
    note = ""
    if path.suffix.lower() == ".mp4":
        imageio = _import_imageio()
        if imageio is not None:
            n = _write_mp4(path, frames, fps, imageio)
            return VideoResult(path=path, num_frames=n, format="mp4")
        path = path.with_suffix(".gif")
        note = (
            "imageio and imageio-ffmpeg are not installed, so an animated GIF was written instead of MP4 "
            "(install them with: pip install 'styleforge[video]')."
        )
    all_frames = list(frames)
    if not all_frames:
        raise UserInputError("No frames to write.")
    _write_gif(path, all_frames, fps)
    return VideoResult(path=path, num_frames=len(all_frames), format="gif", note=note)


def render_video(
    G: torch.nn.Module, path: str | os.PathLike, options: VideoOptions, device: torch.device | str = "cpu"
) -> VideoResult:
    """Render :func:`video_frames` of ``G`` into ``path`` (``.mp4`` or ``.gif``); see :func:`write_video`."""
    return write_video(path, video_frames(G, options, device), fps=options.fps)

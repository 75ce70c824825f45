"""Texture sticking: does image detail move with the content, or stay at fixed pixel coordinates?

Karras et al., "Alias-Free Generative Adversarial Networks" (2021), fig. 1. Two pictures and one number:

- **Average image.** ``frames`` images are generated from small random perturbations of one latent,
  ``z_i = z + radius * n_i`` with ``n_i ~ N(0, I)`` (``z = RandomState(seed).randn(z_dim)``, as the official
  scripts). For a network with a transformable input (StyleGAN3, StyleGAN-XL, or a StyleGAN2 wrapped by
  :func:`styleforge.metrics.equivariance.with_fourier_input`), each frame is also translated by a random
  ``(tx, ty)`` uniform in ``[-translate, translate]^2`` (image units). Details that move with the content blur
  evenly in the average; details that stick to the pixel grid (e.g. StyleGAN2's fur, its noise inputs) stay
  sharp.
- **Sliced image.** ``w`` is interpolated linearly from ``seed`` to ``seed + 1`` over ``frames`` frames and one
  pixel row (``slice_row``, the middle row by default) of every frame is stacked, frame 0 on top. Content that
  moves during the interpolation draws slanted or curved streaks; details that stick draw vertical streaks.
- **Sharpness** = ``HF(average) / HF(central frame)``, where ``HF`` is the image's energy above
  ``hf_cutoff`` times the Nyquist frequency (luma, mean removed, Kaiser window, radial frequency). Near 1: the
  average is as detailed as one frame (sticking, or frames that do not change); well below 1: the detail
  averaged away. ``frame_change`` (mean squared difference of the frames from the central frame, relative to
  the central frame's variance) tells the two cases apart: sharpness is only meaningful when the frames
  actually differ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styleforge.analysis._common import rgb_image
from styleforge.analysis._plot import image_row_figure
from styleforge.analysis.spectrum import LUMA_WEIGHTS, spectral_window
from styleforge.analysis.video import _labels
from styleforge.metrics.equivariance import supports_input_transform
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import make_grid, save_png, to_uint8
from styleforge.utils.io import atomic_write_json
from styleforge.utils.seeding import z_from_seed

__all__ = ["StickingOptions", "StickingResult", "high_frequency_energy", "sticking_frames", "run_sticking"]

#: frames of the average shown next to it in ``sticking_frames.png``
_NUM_FRAMES_SHOWN = 8
#: those frames are enlarged (nearest neighbour) to at least this many pixels wide
_FRAME_MIN_WIDTH = 96
#: the sliced image is enlarged (nearest neighbour) to at least this many pixels wide
_SLICE_MIN_WIDTH = 256


@dataclass(frozen=True)
class StickingOptions:
    """Settings of :func:`run_sticking`.

    Attributes:
        seed: seed of the central latent (the interpolation goes from ``seed`` to ``seed + 1``).
        frames: images averaged, and frames of the interpolation.
        radius: standard deviation of the latent perturbation, per z coordinate.
        translate: largest translation per axis, in image units, for networks with an input transform
            (0 = latent perturbations only). Ignored for networks without one.
        slice_row: pixel row of the sliced image (``None`` = the middle row).
        hf_cutoff: the sharpness counts energy above this fraction of the Nyquist frequency (0 < f < 1).
        truncation_psi: truncation of the latents.
        noise_mode: generator noise mode (``"const"``: StyleGAN2's noise stays fixed in pixel space).
        class_idx: class of a conditional network.
        batch_size: images per forward pass.
    """

    seed: int = 0
    frames: int = 64
    radius: float = 0.05
    translate: float = 0.05
    slice_row: int | None = None
    hf_cutoff: float = 0.5
    truncation_psi: float = 1.0
    noise_mode: str = "const"
    class_idx: int | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise UserInputError(f"frames must be at least 2, got {self.frames}.")
        if not (self.radius >= 0 and math.isfinite(self.radius)):
            raise UserInputError(f"radius must be a finite number >= 0, got {self.radius}.")
        if not (0 <= self.translate < 0.5):
            raise UserInputError(f"translate must be in [0, 0.5) image units, got {self.translate}.")
        if not (0 < self.hf_cutoff < 1):
            raise UserInputError(
                f"hf_cutoff must be a fraction of the Nyquist frequency in (0, 1), got {self.hf_cutoff}."
            )
        if self.batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {self.batch_size}.")


@dataclass
class StickingResult:
    """Outcome of :func:`run_sticking`.

    Attributes:
        sharpness: ``HF(average) / HF(central frame)``.
        sharpness_vs_frames: ``HF(average) / mean_i HF(frame_i)``.
        frame_change: ``mean_i mean((frame_i - central)^2) / var(central)``.
        translated: whether the frames were also translated.
        central, average: the central frame and the average, float ``[C, H, W]`` in [-1, 1].
        sliced: the sliced image, float ``[C, frames, W]``.
        files: what was written (``figure``, ``frames``, ``sliced``, ``summary``).
    """

    sharpness: float
    sharpness_vs_frames: float
    frame_change: float
    translated: bool
    central: np.ndarray
    average: np.ndarray
    sliced: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "sharpness": self.sharpness,
            "sharpness_vs_frames": self.sharpness_vs_frames,
            "frame_change": self.frame_change,
            "translated": self.translated,
        }


def _luma(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, H, W]`` float64 (BT.601 luma for RGB, the channel mean otherwise)."""
    x = images.to(torch.float64)
    if x.shape[1] == len(LUMA_WEIGHTS):
        return (x * torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).view(1, -1, 1, 1)).sum(1)
    return x.mean(1)


def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Energy of each image above ``cutoff`` times the Nyquist frequency: ``[N, C, H, W]`` -> ``[N]`` float64.

    The luma is mean-removed and Kaiser-windowed (:func:`styleforge.analysis.spectrum.spectral_window`), then
    ``sum |FFT2|^2 / (H W)`` is taken over the bins whose radial frequency ``sqrt(fx^2 + fy^2)`` is at least
    ``cutoff * R / 2`` cycles per image. A pure sinusoid of amplitude ``a`` above the cutoff gives about
    ``a^2 / 2`` times the number of pixels; the window has ``mean(w^2) = 1``.
    """
    x = _luma(images)
    n, h, w = x.shape
    if h != w:
        raise UserInputError(f"expected square images, got {h}x{w}")
    win = torch.from_numpy(spectral_window(h, "kaiser"))
    x = x - (x * win).sum(dim=(1, 2), keepdim=True) / win.sum()
    power = torch.fft.fft2(x * win).abs().square() / (h * w)
    f = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64)  # cycles per image
    radial = (f[:, None].square() + f[None, :].square()).sqrt()
    mask = radial >= cutoff * h / 2
    return (power * mask).sum(dim=(1, 2))


def _central_latent(G: torch.nn.Module, options: StickingOptions, device: torch.device) -> tuple[torch.Tensor, ...]:
    z = z_from_seed(options.seed, int(G.z_dim), device)
    c = _labels(G, 1, options.class_idx, device)
    return z, c


def sticking_frames(
    G: torch.nn.Module, options: StickingOptions, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The central image and the perturbed frames: ``([1, C, H, W], [frames, C, H, W], translated)``.

    Latent noise and translations are drawn from a ``torch.Generator`` seeded with ``options.seed``, so the
    same options give the same frames.
    """
    device = torch.device(device)
    translated = options.translate > 0 and supports_input_transform(G)
    z, c = _central_latent(G, options, device)
    gen = torch.Generator().manual_seed(options.seed)
    out = []
    with torch.no_grad():
        central = _synthesize(G, G.mapping(z, c, truncation_psi=options.truncation_psi), None, options)
        done = 0
        while done < options.frames:
            n = min(options.batch_size, options.frames - done)
            dz = torch.randn([n, z.shape[1]], generator=gen).to(device) * options.radius
            ws = G.mapping(z + dz, c.expand(n, -1), truncation_psi=options.truncation_psi)
            transform = None
            if translated:
                t = (torch.rand([n, 2], generator=gen) * 2 - 1) * options.translate
                transform = torch.eye(3).repeat(n, 1, 1)
                transform[:, :2, 2] = -t  # the network-side matrix moves the content by +t
                transform = transform.to(device)
            out.append(_synthesize(G, ws, transform, options).cpu())
            done += n
    return central.cpu(), torch.cat(out), translated


def _synthesize(
    G: torch.nn.Module, ws: torch.Tensor, transform: torch.Tensor | None, options: StickingOptions
) -> torch.Tensor:
    kwargs: dict[str, Any] = {"noise_mode": options.noise_mode}
    if transform is not None:
        kwargs["transform"] = transform
    return G.synthesis(ws, **kwargs).to(torch.float32)


def sliced_image(G: torch.nn.Module, options: StickingOptions, device: torch.device | str = "cpu") -> torch.Tensor:
    """Row ``slice_row`` of each frame of a linear W interpolation from ``seed`` to ``seed + 1``: ``[C, frames, W]``."""
    device = torch.device(device)
    res = int(G.img_resolution)
    row = res // 2 if options.slice_row is None else options.slice_row
    if not 0 <= row < res:
        raise UserInputError(f"slice_row must be in [0, {res - 1}], got {row}.")
    z = torch.cat([z_from_seed(options.seed + k, int(G.z_dim), device) for k in range(2)])
    c = _labels(G, 2, options.class_idx, device)
    rows = []
    with torch.no_grad():
        w0, w1 = G.mapping(z, c, truncation_psi=options.truncation_psi).unbind(0)
        t_all = torch.linspace(0, 1, options.frames, device=device)
        for start in range(0, options.frames, options.batch_size):
            t = t_all[start : start + options.batch_size].view(-1, 1, 1)
            ws = w0.unsqueeze(0) * (1 - t) + w1.unsqueeze(0) * t
            rows.append(_synthesize(G, ws, None, options)[:, :, row, :].cpu())
    return torch.cat(rows).permute(1, 0, 2)  # [C, frames, W]



def run_sticking(
    G: torch.nn.Module,
    out_dir: str | Path,
    options: StickingOptions | None = None,
    device: torch.device | str = "cpu",
) -> StickingResult:
    """Texture-sticking analysis of ``G`` (see the module docstring); writes the figures into ``out_dir``.

    Files: ``sticking.png`` (central frame | average), ``sticking_frames.png`` (the first frames averaged),
    ``sticking_slice.png`` (the sliced image) and ``sticking.json`` (numbers and options).
    """
    options = options or StickingOptions()
    central, frames, translated = sticking_frames(G, options, device)
    average = frames.mean(0, keepdim=True)
    hf_avg = float(high_frequency_energy(average, options.hf_cutoff)[0])
    hf_central = float(high_frequency_energy(central, options.hf_cutoff)[0])
    hf_frames = float(high_frequency_energy(frames, options.hf_cutoff).mean())
    var_central = float(central.to(torch.float64).var())
    change = float((frames.to(torch.float64) - central.to(torch.float64)).square().mean()) / max(var_central, 1e-30)
    sliced = sliced_image(G, options, device)
    result = StickingResult(
        sharpness=hf_avg / max(hf_central, 1e-30),
        sharpness_vs_frames=hf_avg / max(hf_frames, 1e-30),
        frame_change=change,
        translated=translated,
        central=central[0].numpy(),
        average=average[0].numpy(),
        sliced=sliced.numpy(),
    )

    out = Path(out_dir)
    moves = f"z + {options.radius:g} N(0, I)" + (
        f", translations up to {options.translate:g}" if translated else ", no translation"
    )
    footer = (
        f"seed {options.seed}, {options.frames} frames of {moves}\n"
        f"sharpness {result.sharpness:.3f} (HF energy of the average / central frame, f >= "
        f"{options.hf_cutoff:g} Nyquist); frame change {result.frame_change:.3f}"
    )
    result.files["figure"] = out / "sticking.png"
    save_png(
        result.files["figure"],
        image_row_figure(
            [rgb_image(central[0]), rgb_image(average[0])],
            ["central frame", f"average of {options.frames}"],
            footer=footer,
        ),
    )
    shown = to_uint8(frames[:_NUM_FRAMES_SHOWN])
    if shown.shape[-1] == 1:
        shown = np.repeat(shown, 3, axis=-1)
    result.files["frames"] = out / "sticking_frames.png"
    zoom = max(1, math.ceil(_FRAME_MIN_WIDTH / shown.shape[2]))
    shown = shown.repeat(zoom, axis=1).repeat(zoom, axis=2)
    save_png(result.files["frames"], make_grid(shown, cols=_NUM_FRAMES_SHOWN, pad=2))
    slice_rgb = rgb_image(sliced)
    scale = max(1, math.ceil(_SLICE_MIN_WIDTH / slice_rgb.shape[1]))
    result.files["sliced"] = out / "sticking_slice.png"
    save_png(result.files["sliced"], slice_rgb.repeat(scale, axis=0).repeat(scale, axis=1))
    result.files["summary"] = out / "sticking.json"
    atomic_write_json(
        result.files["summary"],
        {
            **result.summary(),
            "hf_energy": {"average": hf_avg, "central": hf_central, "mean_frame": hf_frames},
            "options": asdict(options),
            "files": {k: p.name for k, p in result.files.items()},
        },
    )
    return result

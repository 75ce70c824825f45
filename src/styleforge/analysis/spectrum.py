"""Mean power spectra of images: generated images against a dataset.

This reproduces the kind of spectral figure in Karras et al., "Alias-Free Generative Adversarial Networks"
(2021): a generator that aliases leaves tell-tale peaks and a flattened high-frequency tail in the average
spectrum of its images, which a side-by-side comparison with the training data makes visible.

Procedure, per image ``x`` (pixel values in [-1, 1], shape ``[C, H, W]`` with ``H == W == R``):

1. Channels: ``channel_mode="gray"`` turns RGB into luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601);
   ``"channels"`` keeps every channel and averages their spectra.
2. The window-weighted mean of each image (and channel) is removed, so the DC bin is exactly zero and does
   not swamp the picture (the slice plots start at the first bin after DC).
3. A separable 2-D window ``w(y) w(x)`` is applied: Kaiser with ``beta = 8`` by default (as in the paper's
   analysis), or Hann. The window is scaled so that ``mean(w^2) = 1``: it keeps the power of white noise.
4. ``P = |FFT2(x w)|^2 / (H W)``, optionally on a zero-padded grid ``fft_padding`` times larger (finer
   frequency sampling, same content). With this scaling, white noise of variance ``sigma^2`` has
   ``P = sigma^2`` in every bin.
5. ``P`` is averaged over all images, shifted so that DC is at the centre (index ``F // 2`` for an ``F``-point
   FFT), and shown in decibels, ``10 log10(P)``.

Frequencies are in cycles per image: bin ``k`` of an ``F``-point FFT of an ``R``-pixel image is ``k R / F``,
and the Nyquist frequency is ``R / 2``. The 1-D slices go from DC to the right along the horizontal axis
(``f_y = 0``) and along the diagonal (``f_x = f_y``, radial frequency ``sqrt(2) f_x``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styleforge.analysis._plot import Curve, heatmap_panel_figure, line_plot
from styleforge.models.base import image_size
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import make_grid, save_png
from styleforge.utils.io import atomic_write_bytes, atomic_write_json

__all__ = [
    "SpectrumOptions",
    "SpectrumAccumulator",
    "SpectrumResult",
    "spectral_window",
    "generated_image_batches",
    "dataset_image_batches",
    "compute_mean_spectrum",
    "spectrum_slices",
    "run_spectrum",
]

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Kaiser window shape parameter used by default (strong side-lobe suppression, ~-60 dB).
DEFAULT_KAISER_BETA = 8.0
#: Floor added before taking the logarithm, in linear power units (-200 dB).
POWER_FLOOR = 1e-20
CHANNEL_MODES = ("gray", "channels")
WINDOWS = ("kaiser", "hann", "none")


@dataclass(frozen=True)
class SpectrumOptions:
    """Settings of a spectrum analysis.

    Attributes:
        num_images: images averaged per source (generated and dataset each).
        batch_size: generator batch size.
        channel_mode: ``"gray"`` (luma) or ``"channels"`` (average of per-channel spectra).
        window: ``"kaiser"``, ``"hann"`` or ``"none"``.
        kaiser_beta: Kaiser shape parameter.
        fft_padding: FFT size relative to the image size (1 = no zero padding).
        truncation_psi: truncation of the generated images (1 = none).
        noise_mode: generator noise mode.
        seed: seed of the latents, labels and the dataset subset.
        quantize: round generated images to uint8 first, as saved images are (then both sources get identical
            treatment).
        db_range: ``(vmin, vmax)`` of the colour scale; ``None`` chooses it from the data.
    """

    num_images: int = 1000
    batch_size: int = 16
    channel_mode: str = "gray"
    window: str = "kaiser"
    kaiser_beta: float = DEFAULT_KAISER_BETA
    fft_padding: int = 1
    truncation_psi: float = 1.0
    noise_mode: str = "const"
    seed: int = 0
    quantize: bool = True
    db_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise UserInputError(f"num_images must be at least 1, got {self.num_images}.")
        if self.batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.channel_mode not in CHANNEL_MODES:
            raise UserInputError(f"channel_mode must be one of {CHANNEL_MODES}, got {self.channel_mode!r}.")
        if self.window not in WINDOWS:
            raise UserInputError(f"window must be one of {WINDOWS}, got {self.window!r}.")
        if self.fft_padding < 1:
            raise UserInputError(f"fft_padding must be a positive integer, got {self.fft_padding}.")
        if self.db_range is not None and not self.db_range[0] < self.db_range[1]:
            raise UserInputError(f"db_range must be (low, high) with low < high, got {self.db_range}.")


def spectral_window(size: int, kind: str = "kaiser", beta: float = DEFAULT_KAISER_BETA,
                    height: int | None = None) -> np.ndarray:
    """Separable 2-D window ``[size, size]`` (or ``[height, size]``) (float64) scaled so that ``mean(w^2) == 1``."""
    w = np.outer(_window_1d(size if height is None else height, kind, beta), _window_1d(size, kind, beta))
    return w / np.sqrt(np.mean(w**2))


def _window_1d(size: int, kind: str, beta: float) -> np.ndarray:
    if kind == "kaiser":
        return np.kaiser(size, beta)
    if kind == "hann":
        return np.hanning(size + 2)[1:-1]  # drop the two zero end points so that no pixel is discarded
    if kind == "none":
        return np.ones(size)
    raise UserInputError(f"Unknown window {kind!r}; use one of {WINDOWS}.")


class SpectrumAccumulator:
    """Streaming mean of ``|FFT2(x w)|^2 / (H W)`` over images.

    Args:
        resolution: image size R (images are ``R x R``; the longer side of non-square ones).
        options: the channel mode, window and FFT padding are read from here.
        size: ``(W, H)`` of non-square images; the FFT stays ``F x F`` (``F = R * fft_padding``), so both axes
            have bins of ``1 / F`` cycles per pixel and the frequencies read in cycles per ``R`` pixels.
    """

    def __init__(self, resolution: int, options: SpectrumOptions | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self.options = options or SpectrumOptions()
        self.resolution = int(resolution)
        self.width, self.height = size if size is not None else (self.resolution, self.resolution)
        self.fft_size = self.resolution * self.options.fft_padding
        self._window = torch.from_numpy(
            spectral_window(self.width, self.options.window, self.options.kaiser_beta, height=self.height)
        )
        self._sum = torch.zeros(self.fft_size, self.fft_size, dtype=torch.float64)
        self.count = 0

    def add(self, images: torch.Tensor | np.ndarray) -> None:
        """Add a batch ``[N, C, R, R]``: float in [-1, 1], or uint8 in [0, 255] (mapped to [-1, 1])."""
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[2] != self.height or x.shape[3] != self.width:
            raise UserInputError(
                f"Expected images [N, C, {self.height}, {self.width}], got {tuple(x.shape)}; "
                "resize the dataset to the generator's resolution."
            )
        x = x.detach().cpu()
        x = x.to(torch.float64) / 127.5 - 1 if x.dtype == torch.uint8 else x.to(torch.float64)
        if self.options.channel_mode == "gray" and x.shape[1] == len(LUMA_WEIGHTS):
            x = (x * torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).view(1, -1, 1, 1)).sum(1, keepdim=True)
        elif self.options.channel_mode == "gray" and x.shape[1] != 1:
            x = x.mean(1, keepdim=True)
        w = self._window
        x = x - (x * w).sum(dim=(2, 3), keepdim=True) / w.sum()
        x = x * w
        spec = torch.fft.fft2(x, s=(self.fft_size, self.fft_size))
        power = spec.real.square() + spec.imag.square()
        power = power / (self.height * self.width)
        self._sum += power.mean(dim=1).sum(dim=0)
        self.count += x.shape[0]

    def mean_power(self) -> np.ndarray:
        """Mean power ``[F, F]`` (linear units), shifted so that DC is at ``[F // 2, F // 2]``."""
        if self.count == 0:
            raise RuntimeError("no images were added")
        return torch.fft.fftshift(self._sum / self.count).numpy()

    def frequencies(self) -> np.ndarray:
        """Frequency of each shifted bin along one axis, in cycles per image, ``[F]``."""
        return np.fft.fftshift(np.fft.fftfreq(self.fft_size, d=1.0 / self.resolution))


def to_db(power: np.ndarray) -> np.ndarray:
    """``10 log10(power)``, with a floor at -200 dB."""
    return 10.0 * np.log10(np.maximum(power, POWER_FLOOR))


def generated_image_batches(
    G: torch.nn.Module, options: SpectrumOptions, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """Yield batches ``[n, C, H, W]`` of generated images (float in [-1, 1]; uint8 if ``options.quantize``).

    Latents are ``randn`` from a generator seeded with ``options.seed``; a conditional network gets labels
    drawn uniformly from its ``c_dim`` classes.
    """
    gen = torch.Generator().manual_seed(options.seed)
    c_dim = int(getattr(G, "c_dim", 0))
    done = 0
    with torch.no_grad():
        while done < options.num_images:
            n = min(options.batch_size, options.num_images - done)
            z = torch.randn(n, G.z_dim, generator=gen).to(device)
            c = torch.zeros(n, c_dim)
            if c_dim > 0:
                c[torch.arange(n), torch.randint(c_dim, (n,), generator=gen)] = 1
            img = G(z, c.to(device), truncation_psi=options.truncation_psi, noise_mode=options.noise_mode)
            if options.quantize:
                img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            yield img.cpu()
            done += n


def dataset_image_batches(
    dataset: Any, options: SpectrumOptions, batch_size: int = 64
) -> Iterator[np.ndarray]:
    """Yield uint8 batches ``[n, C, H, W]`` of a random subset (seeded) of ``min(num_images, len)`` images."""
    order = np.random.RandomState(options.seed).permutation(len(dataset))[: options.num_images]
    for start in range(0, len(order), batch_size):
        yield np.stack([np.asarray(dataset[int(i)][0]) for i in order[start : start + batch_size]])


def compute_mean_spectrum(
    batches: Iterable[torch.Tensor | np.ndarray], resolution: int, options: SpectrumOptions,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int]:
    """Mean shifted power spectrum ``[F, F]`` (linear) of the images in ``batches`` (``size = (W, H)`` when they are
    not square), and their number."""
    acc = SpectrumAccumulator(resolution, options, size)
    for batch in batches:
        acc.add(batch)
    return acc.mean_power(), acc.count


def spectrum_slices(power: np.ndarray, resolution: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Horizontal and diagonal 1-D slices of a shifted spectrum ``[F, F]``, from DC outwards.

    Returns:
        ``{"horizontal": (freq, power), "diagonal": (radial_freq, power)}``; frequencies in cycles per
        image. The horizontal slice ends at the Nyquist frequency ``R / 2`` (the bin at index 0, which is
        ``-R/2 == +R/2``).
    """
    f = power.shape[0]
    c = f // 2
    step = resolution / f  # cycles per image per bin
    k = np.arange(f - c)
    horiz_p = np.concatenate([power[c, c:], power[c, :1]])
    horiz_f = np.arange(len(horiz_p)) * step
    diag_p = power[c + k, c + k]
    diag_f = k * step * math.sqrt(2)
    return {"horizontal": (horiz_f, horiz_p), "diagonal": (diag_f, diag_p)}


@dataclass
class SpectrumResult:
    """Outcome of :func:`run_spectrum`.

    Attributes:
        power: source name (``"generated"``, ``"dataset"``) -> mean shifted power spectrum ``[F, F]``.
        counts: source name -> number of images averaged.
        db_range: the colour scale used, ``(vmin, vmax)`` in dB.
        files: what was written: ``heatmap``, ``slices_png``, ``slices_csv``, ``summary``, ``samples``.
    """

    power: dict[str, np.ndarray]
    counts: dict[str, int]
    db_range: tuple[float, float]
    files: dict[str, Path] = field(default_factory=dict)


def _auto_db_range(spectra_db: Iterable[np.ndarray]) -> tuple[float, float]:
    """Colour scale from the data: 1st percentile of the lowest panel to the maximum, rounded to 5 dB."""
    arrays = list(spectra_db)
    lo = min(float(np.percentile(a, 1)) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    lo, hi = 5 * math.floor(lo / 5), 5 * math.ceil(hi / 5)
    return (float(lo), float(hi if hi > lo else lo + 5))


def _csv_bytes(columns: dict[str, np.ndarray]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    names = list(columns)
    writer.writerow(names)
    n = max(len(v) for v in columns.values())
    for i in range(n):
        writer.writerow([f"{columns[k][i]:.6g}" if i < len(columns[k]) else "" for k in names])
    return buf.getvalue().encode("utf-8")


def write_spectrum_report(
    out_dir: str | Path,
    power: dict[str, np.ndarray],
    resolution: int,
    options: SpectrumOptions,
    counts: dict[str, int] | None = None,
) -> tuple[tuple[float, float], dict[str, Path]]:
    """Write the heatmap PNG, the slice plot PNG, the slice CSV and a JSON summary into ``out_dir``.

    Returns the colour scale used and the written paths.
    """
    out = Path(out_dir)
    names = list(power)
    db = {k: to_db(v) for k, v in power.items()}
    vmin, vmax = options.db_range or _auto_db_range(db.values())
    counts = counts or {}
    titles = [f"{k} ({counts[k]} images)" if k in counts else k for k in names]
    heat = heatmap_panel_figure(
        [db[k] for k in names],
        titles,
        vmin,
        vmax,
        unit="dB",
        footer=f"{resolution}px, {options.channel_mode}, {options.window} window; centre DC, edges Nyquist",
    )
    files = {"heatmap": out / "spectrum_heatmap.png"}
    save_png(files["heatmap"], heat)

    slices = {k: spectrum_slices(v, resolution) for k, v in power.items()}
    plots = []
    columns: dict[str, np.ndarray] = {}
    for axis in ("horizontal", "diagonal"):
        freq = slices[names[0]][axis][0]
        columns[f"{axis}_freq"] = freq
        curves = []
        for k in names:
            f, p = slices[k][axis]
            columns[f"{axis}_{k}_db"] = to_db(p)
            curves.append(Curve(f[1:], to_db(p[1:]), k))  # DC is zero after mean removal
        xlabel = "frequency (cycles/image)" if axis == "horizontal" else "radial frequency (cycles/image)"
        plots.append(line_plot(curves, f"{axis} slice", xlabel, "power (dB)"))
    files["slices_png"] = out / "spectrum_slices.png"
    save_png(files["slices_png"], make_grid(np.stack(plots), cols=2))
    files["slices_csv"] = out / "spectrum_slices.csv"
    atomic_write_bytes(files["slices_csv"], _csv_bytes(columns))
    files["summary"] = out / "spectrum.json"
    summary = {
        "resolution": resolution,
        "fft_size": int(next(iter(power.values())).shape[0]),
        "frequency_unit": "cycles per image (Nyquist = resolution / 2)",
        "power_unit": "10*log10(mean |FFT2(x*w)|^2 / (H*W)), x in [-1, 1], mean(w^2) = 1",
        "db_range": [vmin, vmax],
        "num_images": counts,
        "options": asdict(options),
        "slices": {k: {a: to_db(p).round(4).tolist() for a, (_, p) in v.items()} for k, v in slices.items()},
        "slice_frequencies": {a: f.round(6).tolist() for a, (f, _) in slices[names[0]].items()},
        "files": {k: p.name for k, p in files.items()},
    }
    atomic_write_json(files["summary"], summary)
    return (vmin, vmax), files


def run_spectrum(
    G: torch.nn.Module,
    out_dir: str | Path,
    dataset: Any = None,
    options: SpectrumOptions | None = None,
    device: torch.device | str = "cpu",
) -> SpectrumResult:
    """Mean power spectrum of ``G``'s images (and ``dataset``'s, if given); writes a report to ``out_dir``.

    Args:
        G: a generator with the official call convention ``G(z, c, truncation_psi=..., noise_mode=...)``.
        out_dir: folder for ``spectrum_heatmap.png``, ``spectrum_slices.png``, ``spectrum_slices.csv``,
            ``spectrum.json`` and ``samples.png`` (a few generated images, to check that they are images).
        dataset: anything with ``len`` and ``ds[i] -> (uint8 [C, H, W], label)`` at ``G.img_resolution``.
        options: see :class:`SpectrumOptions`.
        device: where ``G`` runs.
    """
    options = options or SpectrumOptions()
    res = int(G.img_resolution)
    power: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    samples: list[torch.Tensor] = []

    def keep_first(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for b in batches:
            if not samples:
                samples.append(b)
            yield b

    size = image_size(G)
    power["generated"], counts["generated"] = compute_mean_spectrum(
        keep_first(generated_image_batches(G, options, device)), res, options, size
    )
    if dataset is not None:
        ds_res = int(getattr(dataset, "resolution", res))
        ds_size = (int(getattr(dataset, "width", ds_res)), int(getattr(dataset, "height", ds_res)))
        if ds_size != size:
            raise UserInputError(
                f"The dataset's images are {ds_size[0]}x{ds_size[1]} but the generator makes {size[0]}x{size[1]} "
                f"images; open the dataset with resolution={res if size[0] == size[1] else size}."
            )
        if len(dataset) == 0:
            raise UserInputError("The dataset is empty.")
        power["dataset"], counts["dataset"] = compute_mean_spectrum(
            dataset_image_batches(dataset, options), res, options, size
        )
    db_range, files = write_spectrum_report(out_dir, power, res, options, counts)
    first = samples[0][:8]
    if first.dtype != torch.uint8:
        first = (first * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    files["samples"] = Path(out_dir) / "samples.png"
    save_png(files["samples"], make_grid(first.permute(0, 2, 3, 1).numpy(), cols=8))
    return SpectrumResult(power=power, counts=counts, db_range=db_range, files=files)

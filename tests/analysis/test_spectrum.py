"""Mean power spectra: the estimator's scaling and frequency axes, and the report files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import styleforge
from styleforge.analysis.spectrum import (
    SpectrumAccumulator,
    SpectrumOptions,
    run_spectrum,
    spectral_window,
    spectrum_slices,
    to_db,
)
from styleforge.utils.errors import UserInputError

RES = 16


@pytest.mark.parametrize("kind", ["kaiser", "hann", "none"])
def test_window_keeps_white_noise_power(kind):
    w = spectral_window(RES, kind)
    assert w.shape == (RES, RES)
    assert float(np.mean(w**2)) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w, w.T)  # separable and symmetric


@pytest.mark.parametrize("window", ["kaiser", "none"])
def test_white_noise_has_flat_spectrum_at_its_variance(window):
    sigma = 0.5
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, RES, RES, generator=gen, dtype=torch.float64) * sigma
    acc = SpectrumAccumulator(RES, SpectrumOptions(window=window, channel_mode="channels"))
    acc.add(x)
    p = acc.mean_power()
    not_dc = np.ones_like(p, dtype=bool)
    not_dc[RES // 2, RES // 2] = False
    assert float(p[not_dc].mean()) == pytest.approx(sigma**2, rel=0.05)
    assert float(p[RES // 2, RES // 2]) < 1e-20  # the (window-weighted) mean was removed


@pytest.mark.parametrize("padding", [1, 2])
def test_sinusoid_peaks_at_its_frequency(padding):
    k = 3  # cycles per image, horizontal
    xs = np.arange(RES)
    img = np.cos(2 * np.pi * k * (xs + 0.5) / RES)[None, :].repeat(RES, 0)
    acc = SpectrumAccumulator(RES, SpectrumOptions(fft_padding=padding))
    acc.add(torch.from_numpy(img)[None, None])
    p = acc.mean_power()
    freqs = acc.frequencies()
    row, col = np.unravel_index(np.argmax(p), p.shape)
    assert freqs[row] == 0 and abs(freqs[col]) == pytest.approx(k)
    f_h, p_h = spectrum_slices(p, RES)["horizontal"]
    assert f_h[np.argmax(p_h)] == pytest.approx(k)
    assert f_h[-1] == pytest.approx(RES / 2)  # the horizontal slice ends at Nyquist


def test_slices_axes():
    p = np.arange(64.0).reshape(8, 8)
    sl = spectrum_slices(p, 8)
    f_h, p_h = sl["horizontal"]
    f_d, p_d = sl["diagonal"]
    np.testing.assert_allclose(f_h, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(p_h, [36, 37, 38, 39, 32])  # centre row, then the Nyquist bin at index 0
    np.testing.assert_allclose(f_d, np.arange(4) * math.sqrt(2))
    np.testing.assert_allclose(p_d, [36, 45, 54, 63])


def test_uint8_and_gray_conversion():
    gen = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (4, 3, RES, RES), generator=gen, dtype=torch.uint8)
    as_float = u8.to(torch.float64) / 127.5 - 1
    a, b = SpectrumAccumulator(RES), SpectrumAccumulator(RES)
    a.add(u8)
    b.add(as_float)
    np.testing.assert_allclose(a.mean_power(), b.mean_power(), rtol=1e-12, atol=1e-20)
    # gray: a grey image (R = G = B) has the spectrum of one channel
    grey = as_float[:, :1].repeat(1, 3, 1, 1)
    c, d = SpectrumAccumulator(RES), SpectrumAccumulator(RES, SpectrumOptions(channel_mode="channels"))
    c.add(grey)
    d.add(as_float[:, :1])
    np.testing.assert_allclose(c.mean_power(), d.mean_power(), rtol=1e-9, atol=1e-20)
    assert to_db(np.array([1.0, 0.01]))[1] == pytest.approx(-20.0)


def test_wrong_size_is_a_user_error():
    with pytest.raises(UserInputError, match="resize"):
        SpectrumAccumulator(RES).add(torch.zeros(1, 3, RES * 2, RES * 2))
    with pytest.raises(UserInputError, match="window"):
        SpectrumOptions(window="gauss")


class _NoiseDataset:
    """Eight uint8 white-noise images (flat spectrum)."""

    resolution = RES

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        rng = np.random.RandomState(i)
        return rng.randint(0, 256, (3, RES, RES)).astype(np.uint8), np.zeros(0, np.float32)


def test_run_spectrum_writes_report(tmp_path):
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny").eval()
    options = SpectrumOptions(num_images=6, batch_size=4)
    res = run_spectrum(G, tmp_path, dataset=_NoiseDataset(), options=options)
    assert res.counts == {"generated": 6, "dataset": 6}
    assert set(res.files) == {"heatmap", "slices_png", "slices_csv", "summary", "samples"}
    heat = np.asarray(Image.open(res.files["heatmap"]).convert("RGB"))
    assert heat.shape[1] > 2 * 256 and heat.std() > 20  # two panels and a colour bar, not blank
    summary = json.loads(res.files["summary"].read_text())
    assert summary["resolution"] == RES and summary["num_images"] == {"generated": 6, "dataset": 6}
    lo, hi = summary["db_range"]
    assert lo < hi
    rows = list(csv.reader(res.files["slices_csv"].open()))
    assert rows[0][:3] == ["horizontal_freq", "horizontal_generated_db", "horizontal_dataset_db"]
    assert len(rows) == 1 + RES // 2 + 1
    # uniform noise in [-1, 1] has variance 1/3; luma weights scale it by sum(w^2) = 0.447
    expected = sum(w * w for w in (0.299, 0.587, 0.114)) / 3
    p = res.power["dataset"]
    assert float(p.sum() / (p.size - 1)) == pytest.approx(expected, rel=0.15)  # mean over the non-DC bins
    assert float(rows[3][2]) == pytest.approx(10 * math.log10(p[RES // 2, RES // 2 + 2]), abs=1e-4)
    # a random generator's images are smooth: less high-frequency power than its low frequencies
    gen_db = np.array([float(r[1]) for r in rows[1:]])
    assert gen_db[-1] < gen_db[1]


def test_dataset_resolution_mismatch(tmp_path):
    G = styleforge.create_model("stylegan-xl-superres-tiny").eval()  # 32 px
    with pytest.raises(UserInputError, match="resolution=32"):
        run_spectrum(G, tmp_path, dataset=_NoiseDataset(), options=SpectrumOptions(num_images=2))

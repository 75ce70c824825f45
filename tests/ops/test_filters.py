"""Filter setup and Kaiser/jinc design, checked against scipy.signal."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch

from styleforge.ops.filters import (
    design_lowpass_filter,
    kaiser_atten,
    kaiser_beta,
    kaiser_lowpass,
    kaiser_window,
    lowpass_numtaps,
    setup_filter,
)

# (numtaps, cutoff, width, fs): StyleGAN3-like designs (6 taps per pixel, up 2 / down 2) and odd lengths
DESIGNS = [
    (12, 10.0, 8.0, 64.0),
    (6, 3.0, 5.0, 16.0),
    (24, 100.0, 40.0, 512.0),
    (7, 2.0, 1.5, 10.0),
    (13, 40.1, 30.0, 128.0),
]


@pytest.mark.parametrize("numtaps,cutoff,width,fs", DESIGNS)
def test_kaiser_lowpass_equals_scipy_firwin(numtaps, cutoff, width, fs):
    ours = kaiser_lowpass(numtaps, cutoff, width, fs).double().numpy()
    expected = scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)
    assert ours.shape == (numtaps,)
    assert np.abs(ours - expected).max() < 1e-6


def test_kaiser_helpers_equal_scipy():
    for numtaps, width in [(12, 0.25), (24, 0.15), (5, 0.1), (40, 0.3)]:
        atten = kaiser_atten(numtaps, width)
        assert atten == pytest.approx(scipy.signal.kaiser_atten(numtaps, width), rel=1e-12)
        assert kaiser_beta(atten) == pytest.approx(scipy.signal.kaiser_beta(atten), rel=1e-12)
        beta = kaiser_beta(atten)
        np.testing.assert_allclose(kaiser_window(numtaps, beta), np.kaiser(numtaps, beta), rtol=1e-12)
    assert kaiser_beta(10.0) == 0.0


def test_kaiser_stopband_attenuation_as_designed():
    numtaps, cutoff, width, fs = 48, 8.0, 6.0, 64.0
    h = kaiser_lowpass(numtaps, cutoff, width, fs).double().numpy()
    freqs, resp = scipy.signal.freqz(h, worN=8192, fs=fs)
    stop = freqs >= cutoff + width / 2
    atten_db = -20 * np.log10(np.abs(resp[stop]).max())
    designed_db = kaiser_atten(numtaps, width / (fs / 2))
    # Kaiser's formula is empirical: the achieved attenuation is within a couple of dB of the design.
    assert atten_db > designed_db - 3.0
    passband = np.abs(resp[freqs <= cutoff - width / 2])
    assert np.abs(passband - 1).max() < 10 ** (-(designed_db - 3.0) / 20) * 2
    assert abs(np.abs(resp[0]) - 1) < 1e-6  # unit DC gain


def _official_style_radial(numtaps, cutoff, width, fs):
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = scipy.special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
    f[r == 0] = cutoff
    w = np.kaiser(numtaps, scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2))))
    f = f * np.outer(w, w)
    return f / f.sum()


@pytest.mark.parametrize("numtaps,cutoff,width,fs", DESIGNS)
def test_radial_filter(numtaps, cutoff, width, fs):
    f = kaiser_lowpass(numtaps, cutoff, width, fs, radial=True)
    assert f.shape == (numtaps, numtaps) and f.dtype == torch.float32
    assert float(f.double().sum()) == pytest.approx(1.0, abs=1e-6)
    # radial symmetry: invariant under transposition and both flips
    assert torch.equal(f, f.T)
    assert torch.allclose(f, f.flip(0), atol=1e-7) and torch.allclose(f, f.flip(1), atol=1e-7)
    expected = _official_style_radial(numtaps, cutoff, width, fs)
    np.testing.assert_allclose(f.double().numpy(), expected, atol=1e-7)


def test_design_helpers():
    assert lowpass_numtaps(6, 2) == 12
    assert lowpass_numtaps(6, 1) == 1
    assert lowpass_numtaps(6, 4, enabled=False) == 1
    assert design_lowpass_filter(1, 10.0, 8.0, 64.0) is None
    assert design_lowpass_filter(12, 10.0, 8.0, 64.0).shape == (12,)
    with pytest.raises(ValueError, match="Nyquist"):
        kaiser_lowpass(12, 40.0, 8.0, 64.0)


def test_setup_filter_shapes_gain_and_flip():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert float(f.sum()) == pytest.approx(1.0, abs=1e-7)
    assert float(f[1, 1]) == pytest.approx(9 / 64)
    f4 = setup_filter([1, 3, 3, 1], gain=4)
    assert float(f4.sum()) == pytest.approx(4.0, abs=1e-6)
    # long 1-D filters stay separable; their per-axis gain is sqrt(gain)
    g = setup_filter(np.arange(1, 9, dtype=np.float32), gain=4)
    assert g.shape == (8,)
    assert float(g.sum()) == pytest.approx(2.0, abs=1e-6)
    assert setup_filter([1, 2], separable=True).shape == (2,)
    assert setup_filter(None).tolist() == [[1.0]]
    h = setup_filter([[1.0, 2.0], [3.0, 4.0]], flip=True, normalize=False)
    assert h.tolist() == [[4.0, 3.0], [2.0, 1.0]]
    with pytest.raises(ValueError):
        setup_filter(np.zeros([2, 2, 2]))

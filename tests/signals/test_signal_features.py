"""Hand-checked signal features: values a vibration engineer can verify with a pencil."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.errors import ConfigError, DataError
from linewatch.signals.features import (
    DEFECTS,
    TIME_FEATURES,
    BearingGeometry,
    FeatureConfig,
    envelope_spectrum,
    extract_features,
    feature_names,
    octave_bands,
)

FS = 10_000.0
N = 10_000  # 1 s at 10 kHz: 1 Hz bins


def _t(n: int = N, fs: float = FS) -> np.ndarray:
    return np.arange(n) / fs


def _col(cfg: FeatureConfig, F: np.ndarray, name: str) -> np.ndarray:
    return F[:, feature_names(cfg).index(name)]


def test_pure_sine_time_features() -> None:
    A = 3.0
    x = A * np.sin(2 * np.pi * 50.0 * _t())  # 50 whole cycles
    cfg = FeatureConfig(sample_rate=FS)
    F = extract_features(x, cfg)
    rms, peak, ptp, crest, kurt, skew = F[0, : len(TIME_FEATURES)]
    assert rms == pytest.approx(A / np.sqrt(2), rel=1e-9)
    assert peak == pytest.approx(A, rel=1e-6)
    assert ptp == pytest.approx(2 * A, rel=1e-6)
    assert crest == pytest.approx(np.sqrt(2), rel=1e-6)
    assert kurt == pytest.approx(1.5, rel=1e-9)  # E[sin^4] / E[sin^2]^2 = (3/8) / (1/4)
    assert abs(skew) < 1e-9


def test_gaussian_noise_kurtosis_is_three_and_impulses_raise_it() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 200_000))
    k = extract_features(x, FeatureConfig(sample_rate=FS, n_peaks=0))[:, 4]
    np.testing.assert_allclose(k, 3.0, atol=0.05)
    spiky = rng.normal(size=N)
    spiky[::500] += 15.0  # 20 impacts per second
    assert extract_features(spiky, FeatureConfig(sample_rate=FS))[0, 4] > 10.0


def test_peak_frequency_of_an_off_bin_tone_is_interpolated() -> None:
    x = 1.0 * np.sin(2 * np.pi * 157.3 * _t()) + 0.4 * np.sin(2 * np.pi * 1234.0 * _t())
    cfg = FeatureConfig(sample_rate=FS, n_peaks=2)
    F = extract_features(x, cfg)
    assert _col(cfg, F, "peak1_hz")[0] == pytest.approx(157.3, abs=0.05)
    assert _col(cfg, F, "peak2_hz")[0] == pytest.approx(1234.0, abs=0.05)
    # The lobe power of a tone is A^2/2 (Hann window, density scaling).
    assert _col(cfg, F, "peak1_power")[0] == pytest.approx(0.5, rel=0.02)
    assert _col(cfg, F, "peak2_power")[0] == pytest.approx(0.08, rel=0.02)


def test_band_energy_and_centroid_of_known_spectrum() -> None:
    A = 2.0
    x = A * np.sin(2 * np.pi * 400.0 * _t())
    cfg = FeatureConfig(sample_rate=FS, bands=((0.0, 300.0), (300.0, 500.0), (500.0, 5000.0)))
    F = extract_features(x, cfg)
    e = F[0, len(TIME_FEATURES) : len(TIME_FEATURES) + 3]
    assert e[1] == pytest.approx(A**2 / 2, rel=1e-3)
    assert e[0] < 1e-6 and e[2] < 1e-6
    assert _col(cfg, F, "spectral_centroid")[0] == pytest.approx(400.0, rel=1e-3)


def test_octave_bands_add_up_to_the_variance() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, N)) + 5.0  # the DC offset is not in any band
    cfg = FeatureConfig(sample_rate=FS)
    F = extract_features(x, cfg)
    n_bands = len(octave_bands(FS))
    bands = F[:, len(TIME_FEATURES) : len(TIME_FEATURES) + n_bands]
    np.testing.assert_allclose(bands.sum(axis=1), x.var(axis=1), rtol=0.01)


def test_welch_finds_the_same_peak() -> None:
    x = np.sin(2 * np.pi * 250.0 * _t()) + 0.1 * np.random.default_rng(2).normal(size=N)
    cfg = FeatureConfig(sample_rate=FS, spectrum="welch", welch_segment=1000, n_peaks=1)
    assert _col(cfg, extract_features(x, cfg), "peak1_hz")[0] == pytest.approx(250.0, abs=1.0)


def test_defect_frequencies_match_the_textbook_formulas() -> None:
    g = BearingGeometry(n_elements=12, element_diameter=10.0, pitch_diameter=50.0, contact_angle_deg=15.0)
    f = 30.0
    r = 10.0 / 50.0 * np.cos(np.deg2rad(15.0))
    expected = [6 * f * (1 - r), 6 * f * (1 + r), 50.0 / 20.0 * f * (1 - r**2), f / 2 * (1 - r)]
    np.testing.assert_allclose(g.defect_frequencies(f), expected, rtol=1e-12)
    assert g.defect_frequencies(np.array([10.0, 20.0])).shape == (2, 4)
    with pytest.raises(ConfigError):
        BearingGeometry(n_elements=9, element_diameter=40.0, pitch_diameter=39.0)


def _bearing_impacts(rate_hz: float, shaft_hz: float, modulate: bool) -> np.ndarray:
    t = _t()
    tau = np.mod(t, 1.0 / rate_hz)
    x = np.exp(-tau / 0.0006) * np.sin(2 * np.pi * 3000.0 * tau)
    if modulate:
        x *= 0.5 * (1 + np.cos(2 * np.pi * shaft_hz * t))
    return x + 0.05 * np.random.default_rng(3).normal(size=t.size) + 0.1 * np.sin(2 * np.pi * shaft_hz * t)


def test_envelope_energy_points_at_the_defect() -> None:
    g = BearingGeometry(n_elements=9, element_diameter=7.94, pitch_diameter=39.04)
    shaft = 24.5
    bpfo, bpfi = g.defect_frequencies(shaft)[:2]
    x = np.stack([_bearing_impacts(bpfo, shaft, False), _bearing_impacts(bpfi, shaft, True)])
    cfg = FeatureConfig(sample_rate=FS, bearing=g, shaft_hz=shaft, envelope_band=(2000.0, 4500.0))
    F = extract_features(x, cfg)
    env = F[:, [feature_names(cfg).index(f"env_{d}") for d in DEFECTS]]
    assert int(np.argmax(env[0])) == DEFECTS.index("bpfo")
    assert int(np.argmax(env[1])) == DEFECTS.index("bpfi")
    # Not a clean zero elsewhere: 3 x BPFO (322.5 Hz) falls inside the ±2 % window of 2 x BPFI (325 Hz).
    assert env[0, 0] > 3 * env[0, 1]
    # Per-window shaft speeds: a wrong speed moves the search windows off the lines.
    F_wrong = extract_features(x, cfg, shaft_hz=np.array([shaft * 1.3, shaft * 1.3]))
    assert F_wrong[0, feature_names(cfg).index("env_bpfo")] < 0.2 * env[0, 0]


def test_envelope_spectrum_of_am_signal_peaks_at_modulation() -> None:
    t = _t()
    x = (1 + 0.5 * np.cos(2 * np.pi * 37.0 * t)) * np.sin(2 * np.pi * 3000.0 * t)
    f, p = envelope_spectrum(x[None, :], FeatureConfig(sample_rate=FS, envelope_band=(2000.0, 4000.0)))
    assert f[np.argmax(p[0])] == pytest.approx(37.0, abs=1.0)


def test_log_power_only_touches_power_columns() -> None:
    x = np.random.default_rng(6).normal(size=(2, 4096))
    lin_cfg = FeatureConfig(sample_rate=FS, n_peaks=2)
    log_cfg = FeatureConfig(sample_rate=FS, n_peaks=2, log_power=True)
    lin, log = extract_features(x, lin_cfg), extract_features(x, log_cfg)
    names = feature_names(lin_cfg)
    for i, n in enumerate(names):
        if n.startswith("band_") or n.endswith("_power"):
            np.testing.assert_allclose(log[:, i], np.log10(lin[:, i] + 1e-12), rtol=1e-12)
        else:
            np.testing.assert_array_equal(log[:, i], lin[:, i])


def test_names_match_columns_and_order() -> None:
    g = BearingGeometry(n_elements=9, element_diameter=7.94, pitch_diameter=39.04)
    cfg = FeatureConfig(sample_rate=FS, n_peaks=2, bearing=g, shaft_hz=25.0)
    names = feature_names(cfg, prefix="motor.")
    F = extract_features(np.random.default_rng(4).normal(size=(2, 2048)), cfg)
    assert F.shape == (2, len(names))
    assert names[:6] == [f"motor.{n}" for n in TIME_FEATURES]
    assert names[-4:] == [f"motor.env_{d}" for d in DEFECTS]
    order = [names.index(f"motor.{n}") for n in ("spectral_centroid", "peak1_hz", "peak1_power")]
    assert order == sorted(order)


def test_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4096)) * rng.uniform(0.5, 3, (6, 1))
    cfg = FeatureConfig(sample_rate=FS)
    batch = extract_features(x, cfg)
    single = np.vstack([extract_features(row, cfg) for row in x])
    np.testing.assert_allclose(batch, single, rtol=1e-10, atol=1e-12)


def test_degenerate_windows_stay_finite() -> None:
    x = np.vstack([np.zeros(1024), np.full(1024, 2.5)])
    F = extract_features(x, FeatureConfig(sample_rate=FS))
    assert np.isfinite(F).all()
    assert F[0, 3] == 0.0 and F[1, 3] == pytest.approx(1.0)  # crest factor
    assert F[1, 4] == 0.0 and F[1, 5] == 0.0  # kurtosis, skewness undefined -> 0


def test_bad_input_is_refused_clearly() -> None:
    cfg = FeatureConfig(sample_rate=FS)
    x = np.zeros((2, 100))
    x[1, 5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        extract_features(x, cfg)
    with pytest.raises(DataError):
        extract_features(np.zeros((2, 3, 4)), cfg)
    with pytest.raises(ConfigError):
        FeatureConfig(sample_rate=FS, bands=((6000.0, 7000.0),))
    g = BearingGeometry(n_elements=9, element_diameter=7.94, pitch_diameter=39.04)
    with pytest.raises(ConfigError, match="shaft"):
        extract_features(np.zeros((1, 100)), FeatureConfig(sample_rate=FS, bearing=g))

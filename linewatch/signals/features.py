"""Per-window features of vibration, current and other fast signals, vectorised over a batch.

Why features at all
-------------------
A 1 s vibration window at 10 kHz is 10,000 numbers, most of them noise. A maintenance
engineer reads the same window as a handful of quantities: how strong it is (RMS, peak),
how impulsive (crest factor, kurtosis: a spalled bearing hits, a healthy one hums), where
the energy sits in frequency (band energies, spectral centroid, the strongest lines), and
whether the envelope repeats at one of the bearing's defect frequencies. Detectors fed with
these numbers learn faster, need less data and can say *which* symptom moved.

Everything is computed for a whole batch ``(n_windows, n_samples)`` at once with numpy;
there is no per-sample or per-window Python loop, so a worker keeps up with kilohertz
sensors on one core.

Feature order (fixed; :func:`feature_names` returns it and detectors rely on it)
--------------------------------------------------------------------------------
1. ``rms``            root mean square of the raw window (includes any DC offset);
2. ``peak``           largest absolute sample;
3. ``peak_to_peak``   max - min;
4. ``crest_factor``   peak / rms (``0`` for an all-zero window);
5. ``kurtosis``       Pearson kurtosis of the mean-removed window (normal noise: 3, sine: 1.5);
6. ``skewness``       third standardised moment (``kurtosis`` and ``skewness`` are ``0`` for a
   constant window, where they are undefined; the quality gate flags such windows anyway);
7. ``band_<lo>_<hi>hz`` one per configured band: power in ``[lo, hi)`` Hz of the mean-removed
   window (units²; a sine of amplitude ``A`` inside the band gives ``A²/2``);
8. ``spectral_centroid`` power-weighted mean frequency (Hz; ``0`` when there is no power);
9. ``peak<i>_hz``, ``peak<i>_power`` for ``i = 1..n_peaks``: the strongest local maxima of the
   spectrum, strongest first, frequency refined by Gaussian (log-parabolic) interpolation,
   power summed over the window's main lobe; ``0`` when fewer peaks exist;
10. ``env_bpfo``, ``env_bpfi``, ``env_bsf``, ``env_ftf`` (only with a bearing geometry):
    power of the envelope spectrum (Hilbert envelope of the band-passed window) around each
    bearing defect frequency and its first ``defect_harmonics`` harmonics.

With ``log_power=True`` every power (7, the ``_power`` half of 9, and 10) is ``log10``'d.

Bearing defect frequencies follow the standard kinematics for a stationary outer race
(``d`` rolling-element diameter, ``D`` pitch diameter, ``φ`` contact angle, ``n`` elements,
``f`` shaft frequency)::

    BPFO = n f / 2 (1 - d/D cos φ)       ball pass, outer race
    BPFI = n f / 2 (1 + d/D cos φ)       ball pass, inner race
    BSF  = D f / (2 d) (1 - (d/D cos φ)²) ball spin
    FTF  = f / 2 (1 - d/D cos φ)          cage (fundamental train)

>>> import numpy as np
>>> fs = 1000.0
>>> t = np.arange(1000) / fs
>>> x = np.stack([2.0 * np.sin(2 * np.pi * 50.0 * t), np.ones(1000)])
>>> cfg = FeatureConfig(sample_rate=fs, bands=((0.0, 100.0), (100.0, 500.0)), n_peaks=1)
>>> feature_names(cfg)[:6]
['rms', 'peak', 'peak_to_peak', 'crest_factor', 'kurtosis', 'skewness']
>>> F = extract_features(x, cfg)
>>> F.shape
(2, 11)
>>> [round(float(v), 3) for v in F[0, :5]]
[1.414, 2.0, 4.0, 1.414, 1.5]
>>> round(float(F[0, feature_names(cfg).index("peak1_hz")]), 2)
50.0
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import signal as sps

from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError, DataError

TIME_FEATURES: tuple[str, ...] = ("rms", "peak", "peak_to_peak", "crest_factor", "kurtosis", "skewness")
DEFECTS: tuple[str, ...] = ("bpfo", "bpfi", "bsf", "ftf")
#: Default number of octave bands counted down from Nyquist (10 kHz -> 39 Hz ... 5 kHz).
DEFAULT_OCTAVES = 8
#: Half-width, in bins, of a Hann window's main lobe: a pure tone's power lies within ±2 bins.
HANN_LOBE_BINS = 2
#: A window whose variance is below (this × its largest magnitude)² is treated as constant:
#: float32 samples carry about 7 significant digits, so anything smaller is rounding noise.
CONSTANT_RELATIVE_STD = 1e-6
#: Floor for logarithms of spectral power (keeps log-parabolic interpolation finite).
_TINY = 1e-300
#: Added to powers before ``log10`` when ``log_power`` is set (units²): far below any real sensor's
#: noise floor, so it only keeps an all-zero window finite.
POWER_FLOOR = 1e-12
#: Samples per block of windows featurised at once: 128 k float64 samples are 1 MiB, so the
#: temporaries of a block (mean-removed copy, windowed copy, spectrum) stay in cache instead of
#: streaming tens of MB through memory.
#: Every feature is computed row by row, so the blocking changes no value.
FEATURE_BLOCK_SAMPLES = 1 << 17


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry; diameters in any one unit, contact angle in degrees.

    >>> g = BearingGeometry(n_elements=9, element_diameter=7.94, pitch_diameter=39.04)
    >>> [round(float(v), 2) for v in g.defect_frequencies(30.0)]
    [107.54, 162.46, 70.7, 11.95]
    """

    n_elements: int
    element_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_elements < 3:
            raise ConfigError(f"n_elements={self.n_elements!r}: a rolling bearing has at least 3 elements")
        if not 0.0 < self.element_diameter < self.pitch_diameter:
            raise ConfigError(
                f"element_diameter={self.element_diameter!r} must be positive and smaller than "
                f"pitch_diameter={self.pitch_diameter!r} (both in the same unit)"
            )
        if not 0.0 <= self.contact_angle_deg < 90.0:
            raise ConfigError(f"contact_angle_deg={self.contact_angle_deg!r} must be in [0, 90)")

    def defect_frequencies(self, shaft_hz: float | np.ndarray) -> np.ndarray:
        """BPFO, BPFI, BSF, FTF in Hz for the given shaft frequency; shape ``shaft.shape + (4,)``."""
        f = np.asarray(shaft_hz, dtype=np.float64)[..., None]
        r = self.element_diameter / self.pitch_diameter * np.cos(np.deg2rad(self.contact_angle_deg))
        n = float(self.n_elements)
        bsf = self.pitch_diameter / (2 * self.element_diameter) * (1 - r * r)
        factors = np.array([n / 2 * (1 - r), n / 2 * (1 + r), bsf, 0.5 * (1 - r)])
        return f * factors


#: A 6205-type deep-groove ball bearing (9 balls, 7.94 mm, pitch 39.04 mm): the textbook example, and
#: the geometry the envelope features assume unless the settings name another (``bearing_geometry``).
DEFAULT_BEARING = BearingGeometry(n_elements=9, element_diameter=7.94, pitch_diameter=39.04)


def octave_bands(sample_rate: float, n_octaves: int = DEFAULT_OCTAVES) -> tuple[tuple[float, float], ...]:
    """Octave bands counted down from Nyquist, the lowest starting at 0 Hz.

    Octaves because machine faults spread over decades of frequency: imbalance and
    looseness live at a few times shaft speed, bearing resonances in the kilohertz.

    >>> octave_bands(1000.0, 3)
    ((0.0, 125.0), (125.0, 250.0), (250.0, 500.0))
    """
    nyq = sample_rate / 2.0
    edges = [nyq / 2.0**k for k in range(n_octaves, -1, -1)]
    edges[0] = 0.0
    return tuple((float(lo), float(hi)) for lo, hi in itertools.pairwise(edges))


@dataclass(frozen=True)
class FeatureConfig:
    """What to compute for one sensor's windows.

    Parameters
    ----------
    sample_rate:
        Samples per second of the windows.
    bands:
        ``(lo, hi)`` Hz pairs for band energies; ``None`` = :func:`octave_bands`.
    n_peaks:
        How many dominant spectral peaks to report.
    spectrum:
        ``"fft"`` (Hann-windowed periodogram of the whole window: best resolution) or
        ``"welch"`` (averaged segments of ``welch_segment`` samples: less variance, coarser).
    bearing, shaft_hz:
        Geometry and nominal shaft frequency for the envelope features; the shaft frequency can
        also be given per window to :func:`extract_features` (variable-speed drives).
    envelope_band:
        Band-pass (Hz) applied before the Hilbert envelope, ideally around a structural
        resonance the impacts excite; ``None`` = everything above 1/20 of Nyquist, which drops
        the shaft harmonics that would otherwise dominate the envelope.
    defect_harmonics, defect_tolerance:
        Harmonics summed per defect frequency, and the relative half-width of each search
        window (slip and speed uncertainty move the lines by a percent or two).
    log_power:
        Report every power (band energies, peak powers, envelope energies) as
        ``log10(power + POWER_FLOOR)``. Powers of healthy machines are roughly log-normal and a
        growing fault multiplies them, so linear models (PCA) and scalers behave much better on
        logs; the names do not change.
    """

    sample_rate: float
    bands: tuple[tuple[float, float], ...] | None = None
    n_peaks: int = 3
    spectrum: Literal["fft", "welch"] = "fft"
    welch_segment: int = 1024
    bearing: BearingGeometry | None = None
    shaft_hz: float | None = None
    envelope_band: tuple[float, float] | None = None
    defect_harmonics: int = 3
    defect_tolerance: float = 0.02
    log_power: bool = False

    def __post_init__(self) -> None:
        if not self.sample_rate > 0:
            raise ConfigError(f"sample_rate={self.sample_rate!r} must be positive (samples per second)")
        nyq = self.sample_rate / 2.0
        for lo, hi in self.resolved_bands():
            if not 0.0 <= lo < hi:
                raise ConfigError(f"band ({lo}, {hi}) must satisfy 0 <= lo < hi (Hz)")
            if lo >= nyq:
                raise ConfigError(f"band ({lo}, {hi}) starts at or above Nyquist ({nyq:g} Hz)")
        if self.n_peaks < 0:
            raise ConfigError(f"n_peaks={self.n_peaks!r} must be >= 0")
        if self.spectrum not in ("fft", "welch"):
            raise ConfigError(f"spectrum={self.spectrum!r}; use 'fft' or 'welch'")
        if self.welch_segment < 8:
            raise ConfigError(f"welch_segment={self.welch_segment!r} is too short; use at least 8 samples")
        if self.defect_harmonics < 1 or not 0.0 < self.defect_tolerance < 0.5:
            raise ConfigError(
                "defect_harmonics must be >= 1 and defect_tolerance in (0, 0.5), e.g. 3 and 0.02"
            )
        if self.envelope_band is not None and not 0.0 <= self.envelope_band[0] < self.envelope_band[1]:
            raise ConfigError(f"envelope_band={self.envelope_band!r} must be (lo, hi) with 0 <= lo < hi")

    def resolved_bands(self) -> tuple[tuple[float, float], ...]:
        return octave_bands(self.sample_rate) if self.bands is None else tuple(self.bands)


def _band_name(lo: float, hi: float) -> str:
    return f"band_{lo:g}_{hi:g}hz"


def feature_names(config: FeatureConfig, *, prefix: str = "") -> list[str]:
    """Names of :func:`extract_features`' columns, in order; ``prefix`` e.g. ``"motor_de."``."""
    names = list(TIME_FEATURES)
    names += [_band_name(lo, hi) for lo, hi in config.resolved_bands()]
    names.append("spectral_centroid")
    for i in range(1, config.n_peaks + 1):
        names += [f"peak{i}_hz", f"peak{i}_power"]
    if config.bearing is not None:
        names += [f"env_{d}" for d in DEFECTS]
    return [prefix + n for n in names]


def _as_windows(windows: np.ndarray) -> np.ndarray:
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise DataError(f"expected windows of shape (n_windows, n_samples), got {x.shape}")
    if x.shape[1] < 8:
        raise DataError(f"windows of {x.shape[1]} samples are too short for spectral features; use >= 8")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{bad} window(s) contain NaN or infinite samples; run the quality gate first")
    return x


def time_features(x: np.ndarray) -> np.ndarray:
    """The six time-domain features of :data:`TIME_FEATURES` for windows ``(n, m)``."""
    return _time_features(x, x - x.mean(axis=1, keepdims=True))


def _time_features(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:func:`time_features` given the mean-removed windows ``d`` (shared with the spectrum)."""
    buf = np.multiply(x, x)
    rms = np.sqrt(np.mean(buf, axis=1))
    xmax, xmin = x.max(axis=1), x.min(axis=1)
    peak = np.maximum(np.abs(xmax), np.abs(xmin))
    crest = np.divide(peak, rms, out=np.zeros_like(rms), where=rms > 0)
    d2 = np.multiply(d, d)
    m2 = d2.mean(axis=1)
    m3 = np.multiply(d2, d, out=buf).mean(axis=1)
    m4 = np.multiply(d2, d2, out=buf).mean(axis=1)
    varying = m2 > (CONSTANT_RELATIVE_STD * np.maximum(peak, np.finfo(np.float64).tiny)) ** 2
    safe = np.where(varying, m2, 1.0)
    kurt = np.where(varying, m4 / (safe * safe), 0.0)
    skew = np.where(varying, m3 / safe**1.5, 0.0)
    return np.column_stack([rms, peak, xmax - xmin, crest, kurt, skew])


def power_spectrum(x: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral density of mean-removed windows: ``(freqs, psd (n, n_freqs))``.

    Density scaling, so ``psd.sum(axis=1) * df`` is the window's variance (Parseval) and a
    band's energy does not depend on the window length.
    """
    fs = config.sample_rate
    m = x.shape[1]
    if config.spectrum == "welch":
        nper = min(config.welch_segment, m)
        f, p = sps.welch(x, fs=fs, window="hann", nperseg=nper, detrend="constant", axis=-1)
        return f, p
    return _rfft_freqs(m, fs), _periodogram(x - x.mean(axis=1, keepdims=True), fs)


@functools.lru_cache(maxsize=32)
def _hann(m: int) -> tuple[np.ndarray, float]:
    """Periodic Hann window of ``m`` samples (exact partition of unity for spectral sums) and its energy."""
    w = np.hanning(m + 1)[:-1]
    w.setflags(write=False)
    return w, float(np.sum(w * w))


@functools.lru_cache(maxsize=32)
def _rfft_freqs(m: int, fs: float) -> np.ndarray:
    f = np.fft.rfftfreq(m, d=1.0 / fs)
    f.setflags(write=False)
    return f


def _periodogram(d: np.ndarray, fs: float) -> np.ndarray:
    """Hann periodogram (density, one-sided) of mean-removed windows ``d``; ``d`` is not modified."""
    m = d.shape[1]
    w, energy = _hann(m)
    spec = np.fft.rfft(d * w, axis=1)
    p = np.square(spec.real)
    p += np.square(spec.imag)
    p /= fs * energy
    p[:, 1 : (m + 1) // 2] *= 2.0  # fold negative frequencies; DC and (even m) Nyquist appear once
    return p


def _range_power(cum: np.ndarray, lo_idx: np.ndarray, hi_idx: np.ndarray) -> np.ndarray:
    """Sum of power over bins ``[lo_idx, hi_idx)`` per row, from a leading-zero cumulative sum."""
    n_bins = cum.shape[1] - 1
    lo_idx = np.clip(lo_idx, 0, n_bins)
    hi_idx = np.clip(hi_idx, 0, n_bins)
    return np.take_along_axis(cum, hi_idx, axis=1) - np.take_along_axis(cum, lo_idx, axis=1)


def _cumulative_power(freqs: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Leading-zero cumulative sum of ``p * df`` per row: band, peak-lobe and defect powers are differences of it."""
    df = freqs[1] - freqs[0]
    cum = np.empty((p.shape[0], p.shape[1] + 1))
    cum[:, 0] = 0.0
    np.cumsum(np.multiply(p, df, out=cum[:, 1:]), axis=1, out=cum[:, 1:])
    return cum


def _band_energies(freqs: np.ndarray, p: np.ndarray, bands: tuple[tuple[float, float], ...],
                   cum: np.ndarray | None = None) -> np.ndarray:
    if not bands:
        return np.zeros((p.shape[0], 0))
    cum = _cumulative_power(freqs, p) if cum is None else cum
    lo = np.searchsorted(freqs, [b[0] for b in bands], side="left")
    # The top band includes Nyquist itself; every other band is half-open so none overlap.
    hi = np.array(
        [np.searchsorted(freqs, b[1], side="right" if b[1] >= freqs[-1] else "left") for b in bands]
    )
    n = p.shape[0]
    return _range_power(cum, np.broadcast_to(lo, (n, lo.size)), np.broadcast_to(hi, (n, hi.size)))


def _spectral_peaks(freqs: np.ndarray, p: np.ndarray, k: int, cum: np.ndarray | None = None) -> np.ndarray:
    """``(n, 2k)``: frequency and lobe power of the ``k`` strongest local maxima (DC excluded).

    Strongest first; two maxima of exactly equal power come lowest frequency first.
    """
    n, nf = p.shape
    out = np.zeros((n, 2 * k))
    if k == 0 or nf < 3:
        return out
    df = freqs[1] - freqs[0]
    interior = p[:, 1:-1]
    is_peak = (interior > p[:, :-2]) & (interior >= p[:, 2:])
    cand = np.where(is_peak, interior, -np.inf)
    kk = min(k, cand.shape[1])
    # k is 2 or 3: k passes of argmax beat a partition of thousands of bins by an order of magnitude.
    rows = np.arange(n)
    top = np.empty((n, kk), dtype=np.intp)
    best = np.empty((n, kk))
    for j in range(kk):
        i = cand.argmax(axis=1)
        top[:, j], best[:, j] = i, cand[rows, i]
        cand[rows, i] = -np.inf
    top += 1  # index into p
    valid = np.isfinite(best)

    def logp(idx: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(np.take_along_axis(p, idx, axis=1), _TINY))

    a, b, c = logp(top - 1), logp(top), logp(top + 1)
    denom = a - 2 * b + c
    shift = np.divide(0.5 * (a - c), denom, out=np.zeros_like(denom), where=denom < 0)
    freq = (top + np.clip(shift, -0.5, 0.5)) * df
    cum = _cumulative_power(freqs, p) if cum is None else cum
    power = _range_power(cum, top - HANN_LOBE_BINS, top + HANN_LOBE_BINS + 1)
    out[:, 0 : 2 * kk : 2] = np.where(valid, freq, 0.0)
    out[:, 1 : 2 * kk : 2] = np.where(valid, power, 0.0)
    return out


def envelope_spectrum(x: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Power spectral density of the Hilbert envelope of the band-passed windows.

    One FFT does both jobs: zeroing bins outside the band is the band-pass, and zeroing the
    negative frequencies (doubling the positive ones) makes the inverse transform the
    analytic signal, whose magnitude is the envelope. A bearing defect makes the resonance
    ring once per ball pass, so the envelope repeats at the defect frequency even when the
    raw spectrum shows nothing there.
    """
    fs = config.sample_rate
    m = x.shape[1]
    spec = np.fft.rfft(x, axis=1)
    f = np.fft.rfftfreq(m, d=1.0 / fs)
    lo, hi = config.envelope_band if config.envelope_band is not None else (fs / 40.0, fs / 2.0)
    keep = (f >= lo) & (f <= hi) & (f > 0)
    gain = np.where(keep, 2.0, 0.0)
    if m % 2 == 0:
        gain[-1] = np.where(keep[-1], 1.0, 0.0)  # the Nyquist bin has no negative twin
    analytic = np.fft.ifft(spec * gain, n=m, axis=1)
    env = np.abs(analytic)
    return power_spectrum(env, FeatureConfig(sample_rate=fs, bands=(), n_peaks=0))


def _defect_energies(x: np.ndarray, config: FeatureConfig, shaft_hz: np.ndarray) -> np.ndarray:
    assert config.bearing is not None
    freqs, p = envelope_spectrum(x, config)
    df = freqs[1] - freqs[0]
    n = p.shape[0]
    h = np.arange(1, config.defect_harmonics + 1, dtype=np.float64)
    centers = config.bearing.defect_frequencies(shaft_hz)[:, :, None] * h  # (n, 4, H)
    half = np.maximum(centers * config.defect_tolerance, df)
    lo = np.ceil((centers - half) / df).astype(np.int64)
    hi = np.floor((centers + half) / df).astype(np.int64) + 1
    e = _range_power(_cumulative_power(freqs, p), lo.reshape(n, -1), hi.reshape(n, -1)).reshape(centers.shape)
    return e.sum(axis=2)


def extract_features(
    windows: np.ndarray, config: FeatureConfig, *, shaft_hz: float | np.ndarray | None = None
) -> np.ndarray:
    """Feature matrix ``(n_windows, len(feature_names(config)))`` for windows ``(n_windows, n_samples)``.

    ``shaft_hz`` (scalar or one per window) overrides ``config.shaft_hz`` for the envelope
    features; it is required, one way or the other, when a bearing geometry is configured.
    Windows are featurised in blocks of about :data:`FEATURE_BLOCK_SAMPLES` samples (cache-sized);
    each row's features depend on that row alone, so the blocking changes no value.
    """
    x = _as_windows(windows)
    n, m = x.shape
    speed_arr = None
    if config.bearing is not None:
        speed = config.shaft_hz if shaft_hz is None else shaft_hz
        if speed is None:
            raise ConfigError(
                "a bearing geometry needs the shaft speed: set FeatureConfig.shaft_hz or pass shaft_hz"
            )
        speed_arr = np.broadcast_to(np.asarray(speed, dtype=np.float64), (n,))
        if not (np.isfinite(speed_arr).all() and (speed_arr > 0).all()):
            raise DataError("shaft_hz must be positive and finite for every window")
    F = np.empty((n, len(feature_names(config))))
    if n == 0:
        return F
    spectra: list[np.ndarray] = []
    freqs = _rfft_freqs(m, config.sample_rate)
    step = max(1, FEATURE_BLOCK_SAMPLES // m)
    for lo in range(0, n, step):
        rows = slice(lo, lo + step)
        freqs, p = _block_features(x[rows], config, None if speed_arr is None else speed_arr[rows], F[rows])
        spectra.append(p)
    # The centroid's product runs once over all rows (row-batch invariant, rowwise_matmul).
    p_all = spectra[0] if len(spectra) == 1 else np.concatenate(spectra)
    total = p_all.sum(axis=1)
    c = len(TIME_FEATURES) + len(config.resolved_bands())
    F[:, c] = np.divide(rowwise_matmul(p_all, freqs), total, out=np.zeros_like(total), where=total > 0)
    if config.log_power:
        F[:, _power_columns(config)] = np.log10(F[:, _power_columns(config)] + POWER_FLOOR)
    return F


def _block_features(x: np.ndarray, config: FeatureConfig, speed: np.ndarray | None, out: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every column but the centroid of one block of windows into ``out``; returns ``(freqs, psd)``.

    The mean-removed windows serve the moments and the periodogram, and one cumulative power
    serves the bands and the peak lobes: each is computed once per block.
    """
    bands = config.resolved_bands()
    t = len(TIME_FEATURES)
    if config.spectrum == "fft":
        d = x - x.mean(axis=1, keepdims=True)
        out[:, :t] = _time_features(x, d)
        freqs, p = _rfft_freqs(x.shape[1], config.sample_rate), _periodogram(d, config.sample_rate)
        del d
    else:
        out[:, :t] = time_features(x)
        freqs, p = power_spectrum(x, config)
    cum = _cumulative_power(freqs, p) if bands or config.n_peaks else None
    out[:, t : t + len(bands)] = _band_energies(freqs, p, bands, cum)
    c = t + len(bands) + 1
    out[:, c : c + 2 * config.n_peaks] = _spectral_peaks(freqs, p, config.n_peaks, cum)
    if speed is not None:
        out[:, c + 2 * config.n_peaks :] = _defect_energies(x, config, speed)
    return freqs, p


def _power_columns(config: FeatureConfig) -> np.ndarray:
    """Indices of the power-valued columns (bands, peak powers, envelope energies)."""
    names = feature_names(config)
    power = [i for i, n in enumerate(names) if n.startswith(("band_", "env_")) or n.endswith("_power")]
    return np.array(power, dtype=np.int64)

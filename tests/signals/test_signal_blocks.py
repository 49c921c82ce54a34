"""The blocked, shortcut gate and features give exactly what the plain per-window computation gives.

The live path checks and featurises windows in cache-sized blocks, skips masks where every sample
is present and finite, searches the longest run only in rows that can be stuck and takes the top
spectral peaks by argmax. Detectors and calibrations were fitted on the features the straightforward
code produced, so the fast code must reproduce them bit for bit. The references below are that
straightforward code (the gate and features before the speed-up), run on one window at a time, fed
with messy windows: NaN runs, infinities, absent samples, flat lines, stuck runs, clipping, spikes,
quantisation, zeros, windows too short for a spectrum and several sample rates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.schemas.messages import SignalMeta
from linewatch.signals import quality
from linewatch.signals.features import (
    DEFECTS,
    HANN_LOBE_BINS,
    POWER_FLOOR,
    TIME_FEATURES,
    BearingGeometry,
    FeatureConfig,
    extract_features,
    feature_names,
)
from linewatch.signals.framing import FrameBuilder, WindowFeatures, featurize_windows, window_feature_names
from linewatch.signals.quality import CLIP_HEURISTIC_MIN_SAMPLES, FLAT_MIN_SAMPLES, Issue, QualityGate, SensorLimits

RNG_SEED = 14


# ------------------------------------------------------------------------------------------ references
def ref_gate(gate: QualityGate, x: np.ndarray, sensor: str, present: np.ndarray | None) -> tuple[int, float]:
    """The gate's rules on one window ``x`` (1-D), every mask spelled out: (code, missing fraction)."""
    lim = gate.limits.get(sensor, SensorLimits())
    low = -np.inf if lim.low is None else lim.low
    high = np.inf if lim.high is None else lim.high
    res = lim.resolution
    m = x.size
    pres = np.ones(m, dtype=bool) if present is None else present
    finite = np.isfinite(x)
    good = pres & finite
    n_good = int(good.sum())
    code = 0
    missing = 1.0 - pres.mean()
    code |= int(Issue.MISSING) if missing > gate.max_missing_fraction else 0
    code |= int(Issue.NAN) if (pres & ~finite).any() else 0
    code |= int(Issue.OUT_OF_RANGE) if (good & ((x < low) | (x > high))).any() else 0
    hi = np.where(good, x, -np.inf).max()
    lo = np.where(good, x, np.inf).min()
    flat = n_good >= FLAT_MIN_SAMPLES and hi - lo <= res
    code |= int(Issue.FLATLINE) if flat else 0
    same = good[1:] & good[:-1] & (np.abs(np.diff(np.where(good, x, 0.0))) <= res)
    edges = np.diff(np.concatenate([[0], same.astype(np.int8), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    longest = int(runs.max()) if runs.size else 0
    stuck_len = max(gate.stuck_min_samples, int(np.ceil(gate.stuck_fraction * m)))
    code |= int(Issue.STUCK) if not flat and longest + 1 >= stuck_len else 0
    need = max(gate.saturation_min_samples, np.ceil(gate.saturation_fraction * n_good))
    rail_hi = np.inf if lim.rail_high is None else lim.rail_high
    rail_lo = -np.inf if lim.rail_low is None else lim.rail_low
    railed = (good & ((x >= rail_hi - res) | (x <= rail_lo + res))).sum() >= need
    has_rails = lim.rail_high is not None or lim.rail_low is not None
    at_max = (good & (x >= hi - res)).sum()
    at_min = (good & (x <= lo + res)).sum()
    clipped = not has_rails and m >= CLIP_HEURISTIC_MIN_SAMPLES and max(at_max, at_min) >= need
    code |= int(Issue.SATURATED) if not flat and (railed or clipped) else 0
    return code, float(missing)


def ref_features(x: np.ndarray, cfg: FeatureConfig, shaft_hz: float | None = None) -> np.ndarray:
    """:func:`extract_features` of one window, as the code computed it before blocks and shortcuts."""
    x = x[None, :].astype(np.float64)
    fs, m = cfg.sample_rate, x.shape[1]
    rms = np.sqrt(np.mean(x * x, axis=1))
    xmax, xmin = x.max(axis=1), x.min(axis=1)
    peak = np.maximum(np.abs(xmax), np.abs(xmin))
    crest = np.divide(peak, rms, out=np.zeros_like(rms), where=rms > 0)
    d = x - x.mean(axis=1, keepdims=True)
    d2 = d * d
    m2, m3, m4 = d2.mean(axis=1), (d2 * d).mean(axis=1), (d2 * d2).mean(axis=1)
    varying = m2 > (1e-6 * np.maximum(peak, np.finfo(np.float64).tiny)) ** 2
    safe = np.where(varying, m2, 1.0)
    parts = [rms, peak, xmax - xmin, crest, np.where(varying, m4 / (safe * safe), 0.0),
             np.where(varying, m3 / safe**1.5, 0.0)]
    freqs, p = _ref_psd(x, fs)
    df = freqs[1] - freqs[0]
    cum = np.concatenate([[0.0], np.cumsum(p[0] * df)])
    for lo, hi in cfg.resolved_bands():
        a = np.searchsorted(freqs, lo, side="left")
        b = np.searchsorted(freqs, hi, side="right" if hi >= freqs[-1] else "left")
        parts.append(np.array([cum[b] - cum[a]]))
    total = p.sum(axis=1)
    parts.append(np.divide(rowwise_matmul(p, freqs), total, out=np.zeros_like(total), where=total > 0))
    interior = p[0, 1:-1]
    cand = np.where((interior > p[0, :-2]) & (interior >= p[0, 2:]), interior, -np.inf)
    order = np.argsort(-cand, kind="stable")[: cfg.n_peaks]
    logp = np.log(np.maximum(p[0], 1e-300))
    for i in order + 1:
        if not np.isfinite(cand[i - 1]):
            parts += [np.zeros(1), np.zeros(1)]
            continue
        a, b, c = logp[i - 1], logp[i], logp[i + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        lo_i, hi_i = max(i - HANN_LOBE_BINS, 0), min(i + HANN_LOBE_BINS + 1, p.shape[1])
        parts += [np.array([(i + np.clip(shift, -0.5, 0.5)) * df]), np.array([cum[hi_i] - cum[lo_i]])]
    parts += [np.zeros(1), np.zeros(1)] * (cfg.n_peaks - len(order))
    if cfg.bearing is not None:
        spec = np.fft.rfft(x, axis=1)
        f = np.fft.rfftfreq(m, d=1.0 / fs)
        lo, hi = cfg.envelope_band if cfg.envelope_band is not None else (fs / 40.0, fs / 2.0)
        keep = (f >= lo) & (f <= hi) & (f > 0)
        gain = np.where(keep, 2.0, 0.0)
        if m % 2 == 0:
            gain[-1] = np.where(keep[-1], 1.0, 0.0)
        env = np.abs(np.fft.ifft(spec * gain, n=m, axis=1))
        ef, ep = _ref_psd(env, fs)
        edf = ef[1] - ef[0]
        ecum = np.concatenate([[0.0], np.cumsum(ep[0] * edf)])
        centers = cfg.bearing.defect_frequencies(shaft_hz)[:, None] * np.arange(1, cfg.defect_harmonics + 1)
        half = np.maximum(centers * cfg.defect_tolerance, edf)
        lo_b = np.clip(np.ceil((centers - half) / edf).astype(np.int64), 0, ep.shape[1])
        hi_b = np.clip(np.floor((centers + half) / edf).astype(np.int64) + 1, 0, ep.shape[1])
        parts.append((ecum[hi_b] - ecum[lo_b]).sum(axis=1))
    F = np.concatenate([np.atleast_1d(v) for v in parts])
    if cfg.log_power:
        names = feature_names(cfg)
        power = [i for i, n in enumerate(names) if n.startswith(("band_", "env_")) or n.endswith("_power")]
        F[power] = np.log10(F[power] + POWER_FLOOR)
    return F


def _ref_psd(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    m = x.shape[1]
    w = np.hanning(m + 1)[:-1]
    spec = np.fft.rfft((x - x.mean(axis=1, keepdims=True)) * w, axis=1)
    p = (spec.real**2 + spec.imag**2) / (fs * np.sum(w * w))
    p[:, 1 : (m + 1) // 2] *= 2.0
    return np.fft.rfftfreq(m, d=1.0 / fs), p


# ------------------------------------------------------------------------------------------ windows
def messy_windows(n: int, m: int, seed: int = RNG_SEED) -> np.ndarray:
    """``n`` windows of ``m`` samples, most of them broken in a different way (healthy ones between)."""
    rng = np.random.default_rng(seed)
    t = np.arange(m)
    x = np.sin(2 * np.pi * 0.013 * t) + 0.3 * rng.normal(size=(n, m))
    for i in range(n):
        kind = i % 12
        if kind == 0:
            x[i] = 21.5  # flat line
        elif kind == 1:
            x[i, m // 8 : m // 8 + m // 3 + 1] = x[i, m // 8]  # stuck acquisition
        elif kind == 2:
            x[i] = np.clip(x[i], -0.9, 0.9)  # clipping
        elif kind == 3:
            x[i, m // 2] = 900.0  # spike, out of range
        elif kind == 4:
            x[i, m // 5 : m // 5 + max(1, m // 10)] = np.nan  # a NaN run
        elif kind == 5:
            x[i] = np.round(x[i] * 8) / 8  # coarse quantisation (repeated values everywhere)
        elif kind == 6:
            x[i, ::9] = np.inf
        elif kind == 7:
            x[i] = 0.0
        elif kind == 8:
            x[i, -m // 4 :] = -12.0  # railed at the bottom
    return x


GATES = {
    "default": QualityGate(),
    "limits": QualityGate(limits={"vib": SensorLimits(low=-50, high=50, rail_low=-12, rail_high=12, resolution=0.1),
                                  "temp": SensorLimits(low=-40, high=200)}),
    "strict": QualityGate(stuck_min_samples=2, stuck_fraction=0.0, saturation_min_samples=0,
                          saturation_fraction=0.0, max_missing_fraction=0.0),
}


@pytest.mark.parametrize("m", [1, 7, 8, 31, 64, 255, 256, 1000, 10_000])
@pytest.mark.parametrize("gate_name", sorted(GATES))
def test_gate_equals_the_per_window_reference(m: int, gate_name: str) -> None:
    gate = GATES[gate_name]
    n = 12 if m >= 1000 else 36  # enough rows that small windows span several blocks
    x = messy_windows(n, m)
    sensors = [("vib", "temp", "other")[i % 3] for i in range(n)]
    rng = np.random.default_rng(m)
    present = rng.random((n, m)) > 0.1
    present[1::5] = True
    present[3::7] = False
    for pres in (None, present):
        rep = gate.check(x, sensors=sensors, present=pres)
        expected = [ref_gate(gate, x[i], sensors[i], None if pres is None else pres[i]) for i in range(n)]
        assert rep.codes.tolist() == [c for c, _ in expected]
        assert rep.missing_fraction.tolist() == [f for _, f in expected]
    # The messy windows do trip every reason somewhere (so the comparison above covers them all).
    if gate_name == "limits" and m == 1000:
        seen = np.bitwise_or.reduce(np.concatenate([gate.check(x, sensors=sensors, present=p).codes
                                                    for p in (None, present)]))
        assert seen == sum(int(i) for i in Issue)


def test_gate_blocks_do_not_change_the_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    x = messy_windows(40, 500)
    whole = GATES["limits"].check(x, sensors="vib").codes
    monkeypatch.setattr(quality, "GATE_BLOCK_SAMPLES", 1500)  # three rows a block
    assert GATES["limits"].check(x, sensors="vib").codes.tolist() == whole.tolist()


CONFIGS = {
    "live": dict(n_peaks=2, log_power=True),
    "bands": dict(bands=((0.0, 50.0), (50.0, 400.0), (400.0, 1e9)), n_peaks=3),
    "welch": dict(spectrum="welch", welch_segment=64, n_peaks=1),
    "bearing": dict(bearing=BearingGeometry(9, 7.94, 39.04), envelope_band=(200.0, 2000.0), log_power=True),
}


@pytest.mark.parametrize("m", [8, 33, 1000, 10_000])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_features_equal_the_per_window_reference(m: int, name: str) -> None:
    fs = 1000.0 * max(1, m // 1000)
    opts = dict(CONFIGS[name])
    if "bands" in opts:
        opts["bands"] = tuple((lo, min(hi, fs / 2)) for lo, hi in opts["bands"])
    if name == "welch" and m < 64:
        opts["welch_segment"] = 8
    cfg = FeatureConfig(sample_rate=fs, **opts)
    x = np.nan_to_num(messy_windows(14, m), nan=0.5, posinf=3.0)  # features only ever see finite windows
    shaft = 20.0 + np.arange(14) if cfg.bearing is not None else None
    F = extract_features(x, cfg, shaft_hz=shaft)
    if name == "welch":  # scipy's welch is the reference itself; the moments must still match
        want = np.stack([ref_features(x[i], FeatureConfig(sample_rate=fs)) for i in range(14)])
        np.testing.assert_array_equal(F[:, : len(TIME_FEATURES)], want[:, : len(TIME_FEATURES)])
        return
    want = np.stack([ref_features(x[i], cfg, None if shaft is None else shaft[i]) for i in range(14)])
    assert F.shape == want.shape == (14, len(feature_names(cfg)))
    if cfg.bearing is not None:
        assert [n for n in feature_names(cfg)][-len(DEFECTS) :] == [f"env_{d}" for d in DEFECTS]
    np.testing.assert_array_equal(F, want)


def test_featurize_windows_of_mixed_rates_and_lengths_equal_each_window_alone() -> None:
    """Live batches mix 10 kHz vibration, 2 kHz current and 1 Hz temperature; grouping changes nothing."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rng = np.random.default_rng(RNG_SEED)
    shapes = [("vibration", 10_000.0, 10_000), ("current", 2_000.0, 2_000), ("temperature", 1.0, 1),
              ("other", 50.0, 20)]
    windows = []
    for j in range(30):
        kind, rate, n = shapes[j % len(shapes)]
        x = messy_windows(1, n, seed=j)[0] if j % 3 else rng.normal(size=n)
        x = np.nan_to_num(x, nan=1.0, posinf=2.0).astype(np.float32)
        meta = SignalMeta(asset_id=f"m{j % 2}", sensor=kind, kind=kind, unit="u",
                          start=t0 + timedelta(seconds=j // len(shapes)), sample_rate_hz=rate, n_samples=n)
        windows.append((meta, x))
    gate = GATES["limits"]
    batch = featurize_windows(windows, gate)
    for (meta, x), got in zip(windows, batch, strict=True):
        alone = featurize_windows([(meta, x)], gate)[0]
        assert isinstance(got, WindowFeatures) and isinstance(alone, WindowFeatures)
        assert got.names == alone.names == window_feature_names(meta.sample_rate_hz, meta.n_samples)
        np.testing.assert_array_equal(got.values, alone.values)
        assert got.issues == alone.issues == ref_gate(gate, x.astype(np.float64), meta.sensor, None)[0]
        if meta.n_samples >= 32:
            cfg = FeatureConfig(sample_rate=meta.sample_rate_hz, n_peaks=2, log_power=True)
            np.testing.assert_array_equal(got.values[1:], ref_features(x, cfg))


def test_frame_builder_finds_covered_slots_and_duplicates_like_a_scan() -> None:
    """Bisection over each sensor's sorted windows returns the slots a scan of every window returns."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rng = np.random.default_rng(RNG_SEED)
    builder = FrameBuilder(slot_s=1.0, retention_s=10_000.0)
    added: list[tuple[float, float]] = []
    spans = [("vib", 1.0), ("temp", 7.5), ("cur", 0.5)]
    for j in rng.permutation(90):
        sensor, length = spans[j % 3]
        start = t0 + timedelta(seconds=float(j // 3) * 2.0 + (0.25 if sensor == "cur" else 0.0))
        n = max(1, int(length * 2))
        meta = SignalMeta(asset_id="a", sensor=sensor, kind="other", unit="u", start=start, sample_rate_hz=2.0,
                          n_samples=n)
        w = WindowFeatures(meta, ("mean",), np.zeros(1), 0)
        got = builder.add(w)
        h_start, h_end = w.start, w.end
        added.append((h_start, h_end))
        want = {builder.slot_of(h_start)} | {builder.slot_of(s) for s, _ in added if h_start <= s < h_end}
        assert got == want
        assert builder.add(WindowFeatures(meta, ("mean",), np.ones(1), 0)) == set()  # redelivered: a duplicate
    assert builder.counters()["duplicate"] == 90
    for held in builder.assets["a"].windows.values():
        assert [h.start for h in held] == sorted(h.start for h in held)

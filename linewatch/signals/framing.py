"""The live signals framing path: sensor windows -> features -> one aligned row per asset and time slot.

Why one module
--------------
A model is only as good as the agreement between the rows it was fitted on and the rows it
scores. Training (:func:`training_frames`, whose rows go to :mod:`linewatch.training`) and the live
pipeline (:mod:`linewatch.streams.signals_pipeline`) therefore call the same three functions here:
:func:`featurize_windows` (a window becomes a feature vector and a quality verdict),
:class:`FrameBuilder` (windows of several sensors become one aligned row per asset and time
slot) and :func:`frame_columns` (a model's feature names say which sensor and feature each
column is). It lives under ``signals/`` rather than ``streams/`` because training must not import
``streams`` (the layer rules in ``docs/architecture.md``).

Features per window
-------------------
Every window gets ``mean`` plus the features of :func:`~linewatch.signals.features.extract_features`
at its own sample rate (octave bands down from its Nyquist, :data:`N_PEAKS` spectral peaks,
powers as ``log10``), or plus the six time-domain features only when it has fewer than
:data:`MIN_SPECTRAL_SAMPLES` samples (a 1 Hz thermocouple's one-sample window has no spectrum).
Windows of equal length and rate are stacked so ``extract_features`` runs once per group
(in chunks of at most :data:`FEATURE_CHUNK_SAMPLES` samples, which bounds memory).

Bearing envelope features (``env_bpfo``, ``env_bpfi``, ``env_bsf``, ``env_ftf``: energy of the
Hilbert envelope at the defect frequencies) need the shaft speed, so a *vibration* window gets
them only when its speed is known: the window's own ``SignalMeta.speed_hz`` (a tachometer or the
drive), else the asset's nominal speed in :class:`BearingEnvelope` (the ``asset_speed_hz`` setting).
Training and the live agent pass the same :class:`BearingEnvelope`, so a model's feature names say
whether it expects envelope features; a frame whose window lacks them (no speed) is reported
unscored with the reason, never guessed (:class:`SignalFrame` ``unscored``).

Frames: the aligned-slot rule
-----------------------------
A model's feature names (``"vibration.kurtosis"``, ``"temperature.mean"``) name the sensors it
needs. Time is cut into epoch-aligned slots of ``slot_s`` seconds (slot ``k`` is
``[k·slot_s, (k+1)·slot_s)``, so restarts, replays and a second worker cut identically).
For slot ``k`` each needed sensor contributes its *as-of* window: the latest window that
started in slot ``k`` or before and still covers part of slot ``k`` (so a 60 s temperature
window is held over the 1 s vibration snapshots inside it, but a window is never held past
its own end). The frame of slot ``k`` is **complete** when every needed sensor has such a
window and at least one of them starts in slot ``k`` (otherwise a long window would make the
same data score again in every slot it covers). A complete frame is scored once, as soon as
it is complete, in slot order per asset and model; a slot that completes after a later slot
was scored is counted as ``late`` and not scored (stateful detectors need order). A slot
still incomplete ``retention_s`` seconds of asset time (the newest window end seen on the
asset) after it ended is reported as **missing** (which sensors never came) and dropped,
and windows older than that are forgotten.

Why features are aligned by slot rather than samples resampled onto one grid: these models work
on per-window *features*, and features must be computed at each sensor's native rate: a 10 kHz
vibration spectrum does not survive a 1 Hz grid, and lifting a 1 Hz thermocouple to 10 kHz
multiplies the data 10,000 times for nothing. Aligning the feature vectors by slot keeps each
sensor at its own rate.

>>> import numpy as np
>>> from datetime import UTC, datetime
>>> from linewatch.schemas.messages import SignalMeta
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> rng = np.random.default_rng(0)
>>> vib = SignalMeta(asset_id="m1", sensor="vib", kind="vibration", unit="g", start=t0,
...                  sample_rate_hz=1000.0, n_samples=1000)
>>> tmp = SignalMeta(asset_id="m1", sensor="temp", kind="temperature", unit="degC", start=t0,
...                  sample_rate_hz=1.0, n_samples=1)
>>> wins = featurize_windows([(vib, rng.normal(size=1000).astype("float32")),
...                           (tmp, np.array([41.5], dtype="float32"))])
>>> wins[1].names
('mean', 'rms', 'peak', 'peak_to_peak', 'crest_factor', 'kurtosis', 'skewness')
>>> builder = FrameBuilder(slot_s=1.0)
>>> slots = builder.add(wins[0])
>>> slots |= builder.add(wins[1])
>>> frames, missing = builder.take("m1", "model", frame_columns(["vib.rms", "temp.mean"]), slots)
>>> [round(float(v), 1) for v in frames[0].values], frames[0].ts.isoformat(), missing
([1.0, 41.5], '2026-01-01T00:00:00+00:00', [])
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.detectors.base import load_state, save_state
from linewatch.errors import ConfigError, DataError
from linewatch.schemas.messages import SignalMeta
from linewatch.signals.features import (
    DEFAULT_BEARING,
    TIME_FEATURES,
    BearingGeometry,
    FeatureConfig,
    extract_features,
    feature_names,
    time_features,
)
from linewatch.signals.quality import QualityGate, reason_names

#: Fewer samples than this give a spectrum too coarse to mean anything (bins of fs/n Hz):
#: such windows get time-domain features only.
MIN_SPECTRAL_SAMPLES = 32
#: Spectral peaks per window: the strongest line names the dominant frequency, a second one
#: catches a new tone (bearing, imbalance) before it becomes the strongest.
N_PEAKS = 2
#: Samples per ``extract_features`` call: 10 kHz x 1 s x 400 windows. The float64 copies and
#: the FFT of a chunk then stay below ~150 MB whatever the batch size.
FEATURE_CHUNK_SAMPLES = 4_000_000
#: Default slot length: snapshots of several sensors taken within the same second belong together.
DEFAULT_SLOT_S = 1.0
#: How long (asset time) a slot waits for its missing sensors before it is reported as missing.
DEFAULT_RETENTION_S = 300.0
#: Tolerance in slot units for float POSIX times (1e-9 of a 1 s slot is far below 1 µs).
_SLOT_TOL = 1e-9
#: Names a window's features can have; used to split ``"<sensor>.<feature>"`` where the sensor
#: name itself may contain dots and band names carry decimals (``band_39.0625_78.125hz``).
_FEATURE_NAME = re.compile(
    r"^(mean|rms|peak|peak_to_peak|crest_factor|kurtosis|skewness|spectral_centroid"
    r"|band_[0-9.e+-]+_[0-9.e+-]+hz|peak\d+_(hz|power)|env_(bpfo|bpfi|bsf|ftf))$"
)
_KIND = "signal_frame_builder"


# ---------------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class BearingEnvelope:
    """Where shaft speeds come from when a window does not carry one, and the bearing they apply to.

    ``asset_speed_hz`` maps an asset to its nominal shaft speed (Hz); ``bearing`` is the geometry
    the defect frequencies are computed for. Configuration, built once from the settings
    (:meth:`from_settings`) and passed to training and the live agent alike.
    """

    asset_speed_hz: Mapping[str, float] = field(default_factory=dict)
    bearing: BearingGeometry = DEFAULT_BEARING

    @classmethod
    def from_settings(cls, asset_speed_hz: Mapping[str, float],
                      bearing_geometry: Sequence[float] | None = None) -> BearingEnvelope:
        """From the ``asset_speed_hz`` and ``bearing_geometry`` settings (elements, ball and pitch diameter, angle)."""
        bearing = DEFAULT_BEARING
        if bearing_geometry is not None:
            n, d, pd, *angle = bearing_geometry
            bearing = BearingGeometry(int(n), float(d), float(pd), float(angle[0]) if angle else 0.0)
        return cls(dict(asset_speed_hz), bearing)

    def speed_of(self, meta: SignalMeta) -> float | None:
        """The shaft speed for this window's envelope features, or None (no envelope features)."""
        if meta.kind != "vibration" or meta.n_samples < MIN_SPECTRAL_SAMPLES:
            return None
        return meta.speed_hz if meta.speed_hz is not None else self.asset_speed_hz.get(meta.asset_id)


def feature_config(sample_rate: float, n_samples: int, *, bearing: BearingGeometry | None = None
                   ) -> FeatureConfig | None:
    """The spectral configuration for windows of this rate and length, or None for time features only.

    ``bearing`` adds the envelope features (the windows' shaft speeds then go to ``extract_features``).
    """
    if n_samples < MIN_SPECTRAL_SAMPLES:
        return None
    return FeatureConfig(sample_rate=sample_rate, n_peaks=N_PEAKS, log_power=True, bearing=bearing)


def window_feature_names(sample_rate: float, n_samples: int, *, envelope: bool = False) -> tuple[str, ...]:
    """Column names of :func:`window_features` for windows of this rate and length (with envelope features?)."""
    cfg = feature_config(sample_rate, n_samples, bearing=DEFAULT_BEARING if envelope else None)
    return ("mean", *(feature_names(cfg) if cfg is not None else TIME_FEATURES))


def window_features(windows: np.ndarray, sample_rate: float, *, bearing: BearingGeometry | None = None,
                    shaft_hz: np.ndarray | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and feature matrix ``(n, len(names))`` for same-length windows ``(n, m)`` at one rate.

    With ``bearing`` and ``shaft_hz`` (one speed per window) the envelope features are added.
    """
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DataError(f"expected windows of shape (n_windows, n_samples), got {x.shape}")
    use = bearing if shaft_hz is not None else None
    cfg = feature_config(sample_rate, x.shape[1], bearing=use)
    names = ("mean", *(feature_names(cfg) if cfg is not None else TIME_FEATURES))
    F = extract_features(x, cfg, shaft_hz=shaft_hz) if cfg is not None else time_features(x)
    return names, np.column_stack([x.mean(axis=1), F])


@dataclass(frozen=True)
class WindowFeatures:
    """One decoded window reduced to features, with its quality verdict (``issues``: :class:`Issue` bits)."""

    meta: SignalMeta
    names: tuple[str, ...]
    values: np.ndarray
    issues: int

    @functools.cached_property
    def event_id(self) -> uuid.UUID:
        """``meta.event_id``, computed once (a UUIDv5: the frame builder and the feature row both need it)."""
        return self.meta.event_id

    @functools.cached_property
    def start(self) -> float:
        return self.meta.start.timestamp()

    @property
    def end(self) -> float:
        return self.start + self.meta.n_samples / self.meta.sample_rate_hz

    @property
    def reasons(self) -> list[str]:
        return reason_names(self.issues)


def featurize_windows(
    windows: Sequence[tuple[SignalMeta, np.ndarray]], gate: QualityGate | None = None,
    *, envelope: BearingEnvelope | None = None,
) -> list[WindowFeatures | DataError]:
    """Features and quality verdict of every window, in input order (a DataError where a window cannot be used).

    Windows of equal length and sample rate are stacked, so the features and the quality
    gate run once per group (per chunk of :data:`FEATURE_CHUNK_SAMPLES`), not once per window.
    Vibration windows with a known shaft speed (``envelope``, module docstring) get the
    envelope features as well.
    """
    gate = gate or QualityGate()
    envelope = envelope or BearingEnvelope()
    out: list[WindowFeatures | DataError | None] = [None] * len(windows)
    groups: dict[tuple[float, int, bool], list[int]] = {}
    speeds = [envelope.speed_of(meta) for meta, _ in windows]
    for i, (meta, samples) in enumerate(windows):
        groups.setdefault((float(meta.sample_rate_hz), int(samples.size), speeds[i] is not None), []).append(i)
    for (rate, m, with_speed), idx in groups.items():
        step = max(1, FEATURE_CHUNK_SAMPLES // m)
        for lo in range(0, len(idx), step):
            part = idx[lo : lo + step]
            x = np.stack([windows[i][1] for i in part], dtype=np.float64)
            shaft = np.array([speeds[i] for i in part], dtype=np.float64) if with_speed else None
            names, F = window_features(x, rate, bearing=envelope.bearing, shaft_hz=shaft)
            codes = gate.check(x, sensors=[windows[i][0].sensor for i in part]).codes
            finite = np.isfinite(F).all(axis=1)
            for j, i in enumerate(part):
                meta = windows[i][0]
                if finite[j]:
                    out[i] = WindowFeatures(meta, names, F[j], int(codes[j]))
                else:
                    out[i] = DataError(
                        f"window {meta.asset_id}/{meta.sensor} at {meta.start.isoformat()} gives non-finite "
                        "features (samples beyond the float range?); check the sensor's scaling"
                    )
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- columns
def split_feature_name(name: str) -> tuple[str, str]:
    """``"<sensor>.<feature>"`` -> ``(sensor, feature)``; the sensor name may contain dots.

    >>> split_feature_name("motor.de.band_39.0625_78.125hz")
    ('motor.de', 'band_39.0625_78.125hz')
    """
    for i, ch in enumerate(name):
        if ch == "." and i > 0 and _FEATURE_NAME.match(name[i + 1 :]):
            return name[:i], name[i + 1 :]
    raise ConfigError(
        f"model feature {name!r} is not '<sensor>.<feature>' with a known signal feature "
        "(e.g. 'vibration.kurtosis', 'temperature.mean'); retrain with signal feature names"
    )


def frame_columns(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``(sensor, feature)`` for every model column, in the model's order."""
    return tuple(split_feature_name(n) for n in names)


#: Features a default model uses per sensor kind. Fast sensors: level, impulsiveness and where the
#: energy sits; current without impulse statistics (harmless switching spikes would look like
#: faults); slow sensors: their reading. Spectral peak frequencies are left out: the strongest
#: line can jump between two similar peaks from one window to the next.
_DEFAULT_PATTERNS: dict[str, re.Pattern[str]] = {
    "vibration": re.compile(r"^(rms|peak|crest_factor|kurtosis|skewness|spectral_centroid|band_.*|env_.*)$"),
    "current": re.compile(r"^(rms|band_.*)$"),
}
_SLOW_DEFAULT = re.compile(r"^mean$")


def default_model_features(kind: str, names: Sequence[str]) -> list[str]:
    """The features of a window with ``names`` that a default model of a ``kind`` sensor uses."""
    pattern = _DEFAULT_PATTERNS.get(kind, _SLOW_DEFAULT)
    return [n for n in names if pattern.match(n)]


# ---------------------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class SignalFrame:
    """One asset's model row for one slot, or (``values is None``) a slot whose sensors never all came."""

    asset_id: str
    slot: int
    ts: datetime
    values: np.ndarray | None
    event_ids: tuple[uuid.UUID, ...]
    bad: dict[str, list[str]]  # quality reasons per sensor of the asset at this slot
    missing: tuple[str, ...] = ()
    #: Sensors whose windows came but cannot give the model's features, with the reason
    #: (``"vibration: no shaft speed ..."``): the frame is reported unscored.
    unscored: tuple[str, ...] = ()
    #: The machine state its windows reported (the first of its sensors, by name, that reported one).
    machine_state: str | None = None

    @property
    def usable(self) -> bool:
        """Complete and every sensor of the asset passed the quality gate."""
        return self.values is not None and not self.bad


@dataclass
class _Held:
    sensor: str
    start: float
    end: float
    event_id: uuid.UUID
    names: tuple[str, ...]
    values: np.ndarray
    issues: int
    machine_state: str | None = None


def _start(h: _Held) -> float:
    return h.start


def _machine_state(held: Iterable[_Held | None]) -> str | None:
    """The first machine state reported by ``held`` (in sensor order): a frame's context for fusion."""
    return next((h.machine_state for h in held if h is not None and h.machine_state is not None), None)


@dataclass
class _AssetFrames:
    windows: dict[str, list[_Held]] = field(default_factory=dict)  # per sensor, by start
    watermark: float = -math.inf
    last_slot: dict[str, int] = field(default_factory=dict)  # per model key
    pending: dict[str, set[int]] = field(default_factory=dict)  # incomplete slots per model key
    counters: dict[str, int] = field(
        default_factory=lambda: {"duplicate": 0, "late": 0, "missing": 0, "no_speed": 0})


class FrameBuilder:
    """Per-asset memory of recent window features and the aligned-slot rule (module docstring).

    Plain data keyed by asset, owned by the agent, saved with :meth:`save` and restored with
    :meth:`load`; nothing here reads a clock (asset time is the newest window end seen).
    """

    def __init__(self, *, slot_s: float = DEFAULT_SLOT_S, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.slot_s = float(slot_s)
        self.retention_s = float(retention_s)
        if not (self.slot_s > 0 and self.retention_s >= self.slot_s):
            raise ConfigError(
                f"slot_s={slot_s!r} must be positive and retention_s={retention_s!r} at least one slot"
            )
        self.assets: dict[str, _AssetFrames] = {}

    def slot_of(self, t: float) -> int:
        return math.floor(t / self.slot_s + _SLOT_TOL)

    def add(self, w: WindowFeatures) -> set[int]:
        """Remember a window; returns the slots whose frames it may have completed."""
        st = self.assets.setdefault(w.meta.asset_id, _AssetFrames())
        held = st.windows.setdefault(w.meta.sensor, [])
        eid = w.event_id
        # Each sensor's windows are sorted by start, and a duplicate (same id: same start) sits
        # among the windows of equal start, so bisection finds both it and the windows this one covers.
        at = bisect.bisect_left(held, w.start, key=_start)
        for o in held[at : bisect.bisect_right(held, w.start, lo=at, key=_start)]:
            if o.event_id == eid:
                st.counters["duplicate"] += 1
                return set()
        h = _Held(w.meta.sensor, w.start, w.end, eid, w.names, w.values, w.issues, w.meta.machine_state)
        held.insert(bisect.bisect_right(held, h.start, lo=at, key=_start), h)
        st.watermark = max(st.watermark, h.end)
        slots = {self.slot_of(h.start)}
        for others in st.windows.values():
            lo = bisect.bisect_left(others, h.start, key=_start)
            hi = bisect.bisect_left(others, h.end, lo=lo, key=_start)
            slots.update(self.slot_of(o.start) for o in others[lo:hi])
        return slots

    def _as_of(self, held: list[_Held], k: int) -> _Held | None:
        """Latest window started in slot ``k`` or before that still covers part of slot ``k``."""
        slot_start = k * self.slot_s
        for h in reversed(held):
            if self.slot_of(h.start) <= k:
                return h if h.end > slot_start + _SLOT_TOL * self.slot_s else None
        return None

    def take(
        self, asset: str, key: str, columns: Sequence[tuple[str, str]], slots: Iterable[int]
    ) -> tuple[list[SignalFrame], list[str]]:
        """Frames for model ``key`` (its ``columns``) that ``slots`` completed or that expired missing.

        Returns the frames in slot order (complete ones with ``values``, expired ones without)
        and problems: a needed feature absent from a sensor's windows (the model was trained on
        windows of another rate or length).
        """
        st = self.assets.get(asset)
        if st is None:
            return [], []
        sensors = sorted({s for s, _ in columns})
        pending = st.pending.setdefault(key, set())
        last = st.last_slot.get(key)
        horizon = st.watermark - self.retention_s
        frames: list[SignalFrame] = []
        problems: list[str] = []
        for k in sorted(set(slots) | pending):
            pending.discard(k)
            chosen = {s: self._as_of(st.windows.get(s, []), k) for s in sensors}
            starts_here = [h for h in chosen.values() if h is not None and self.slot_of(h.start) == k]
            if not starts_here:
                continue
            missing = tuple(s for s in sensors if chosen[s] is None)
            if last is not None and k <= last:
                st.counters["late"] += not missing
                continue
            ts = datetime.fromtimestamp(k * self.slot_s, UTC)
            if missing:
                # Expire exactly when prune() would forget the windows that opened this slot.
                if max(h.end for h in starts_here) <= horizon:
                    st.counters["missing"] += 1
                    ids = tuple(h.event_id for h in starts_here)
                    frames.append(SignalFrame(asset, k, ts, None, ids, self._bad(st, k), missing,
                                              machine_state=_machine_state(starts_here)))
                    last = k
                else:
                    pending.add(k)
                continue
            no_speed = tuple(sorted({s for s, f in columns if f.startswith("env_") and f not in chosen[s].names}))
            if no_speed:
                # The model needs envelope features and these windows came without a shaft speed:
                # report the frame unscored (never guess a speed, never crash the batch).
                st.counters["no_speed"] += 1
                ids = tuple(chosen[s].event_id for s in sensors)  # type: ignore[union-attr]
                reasons = tuple(f"{s}: no shaft speed (send SignalMeta.speed_hz or set asset_speed_hz)"
                                for s in no_speed)
                frames.append(SignalFrame(asset, k, ts, None, ids, self._bad(st, k), unscored=reasons,
                                          machine_state=_machine_state(chosen[s] for s in sensors)))
                last = k
                continue
            values = np.empty(len(columns))
            for j, (s, f) in enumerate(columns):
                h = chosen[s]
                try:
                    values[j] = h.values[h.names.index(f)]
                except ValueError:
                    problems.append(
                        f"{asset}/{s}: its windows ({h.values.size} features at their rate and length) lack "
                        f"{f!r}, which model {key} needs; train the model on windows like the ones this sensor sends"
                    )
                    break
            else:
                ids = tuple(chosen[s].event_id for s in sensors)  # type: ignore[union-attr]
                frames.append(SignalFrame(asset, k, ts, values, ids, self._bad(st, k),
                                          machine_state=_machine_state(chosen[s] for s in sensors)))
                last = k
        if last is not None:
            st.last_slot[key] = last
        return frames, problems

    def _bad(self, st: _AssetFrames, k: int) -> dict[str, list[str]]:
        """Quality reasons of every sensor of the asset whose as-of window at slot ``k`` is bad."""
        out = {}
        for s in sorted(st.windows):
            h = self._as_of(st.windows[s], k)
            if h is not None and h.issues:
                out[s] = reason_names(h.issues)
        return out

    def prune(self, asset: str) -> None:
        """Forget windows that ended more than ``retention_s`` before the asset's newest window end."""
        st = self.assets.get(asset)
        if st is None:
            return
        horizon = st.watermark - self.retention_s
        for s in list(st.windows):
            kept = [h for h in st.windows[s] if h.end > horizon]
            if kept:
                st.windows[s] = kept
            else:
                del st.windows[s]

    def counters(self) -> dict[str, int]:
        """Totals over all assets of ``duplicate``, ``late``, ``missing`` and ``no_speed``."""
        total = {"duplicate": 0, "late": 0, "missing": 0, "no_speed": 0}
        for st in self.assets.values():
            for k, v in st.counters.items():
                total[k] = total.get(k, 0) + v
        return total

    # ------------------------------------------------------------------------------------------ state
    def save(self, path: str | Path) -> None:
        """Write every asset's held windows and progress (``metadata.json`` + ``arrays.npz``)."""
        name_sets: list[list[str]] = []
        arrays: dict[str, np.ndarray] = {}
        assets: dict[str, Any] = {}
        for asset in sorted(self.assets):
            st = self.assets[asset]
            wins = []
            for s in sorted(st.windows):
                for h in st.windows[s]:
                    if list(h.names) not in name_sets:
                        name_sets.append(list(h.names))
                    key = f"w{len(arrays)}"
                    arrays[key] = h.values
                    wins.append([s, h.start, h.end, str(h.event_id), name_sets.index(list(h.names)), key, h.issues,
                                 h.machine_state])
            assets[asset] = {
                "windows": wins,
                "watermark": st.watermark if math.isfinite(st.watermark) else None,
                "last_slot": st.last_slot,
                "pending": {k: sorted(v) for k, v in st.pending.items()},
                "counters": st.counters,
            }
        params = {"slot_s": self.slot_s, "retention_s": self.retention_s, "names": name_sets, "assets": assets}
        save_state(path, kind=_KIND, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> FrameBuilder:
        """Restore what :meth:`save` wrote; frames then complete exactly as without the restart."""
        params, arrays = load_state(path, kind=_KIND)
        fb = cls(slot_s=params["slot_s"], retention_s=params["retention_s"])
        names = [tuple(n) for n in params["names"]]
        for asset, d in params["assets"].items():
            st = _AssetFrames(
                watermark=-math.inf if d["watermark"] is None else float(d["watermark"]),
                last_slot={k: int(v) for k, v in d["last_slot"].items()},
                pending={k: set(v) for k, v in d["pending"].items()},
                counters={"no_speed": 0, **{k: int(v) for k, v in d["counters"].items()}},
            )
            for s, start, end, eid, ni, key, issues, *state in d["windows"]:  # state: absent in older saves
                st.windows.setdefault(s, []).append(
                    _Held(s, float(start), float(end), uuid.UUID(eid), names[ni], arrays[key], int(issues),
                          state[0] if state else None)
                )
            fb.assets[asset] = st
        return fb


@dataclass(frozen=True)
class TrainingFrames:
    """The training matrix and where it came from."""

    X: np.ndarray
    feature_names: tuple[str, ...]
    assets: tuple[str, ...]  # asset of each row
    ts: tuple[datetime, ...]  # slot start of each row
    skipped_quality: int  # complete frames left out because a sensor failed the quality gate
    dropped_constant: tuple[str, ...]  # default features left out because they never moved
    flagged: tuple[bool, ...] = ()  # per row: a sensor failed the quality gate (only with include_flagged)

    def provenance(self) -> dict[str, Any]:
        """What :func:`linewatch.training.fit_model` records of these rows: columns, time span and coverage.

        The context (asset and hour of day of each row) becomes the model version's coverage, so SQL
        users see which machines and hours a signals model was trained on.
        """
        return {"feature_names": self.feature_names, "train_start": min(self.ts), "train_end": max(self.ts),
                "context": {"asset": list(self.assets), "hour": list(self.ts)}}


def training_frames(
    messages: Sequence[tuple[SignalMeta, np.ndarray]],
    *,
    features: Sequence[str] | None = None,
    slot_s: float = DEFAULT_SLOT_S,
    gate: QualityGate | None = None,
    drop_constant: bool = True,
    include_flagged: bool = False,
    envelope: BearingEnvelope | None = None,
) -> TrainingFrames:
    """Known-good windows -> one row per complete, quality-clean frame, exactly as the live pipeline builds them.

    ``features`` are ``"<sensor>.<feature>"`` names; None takes :func:`default_model_features` of
    every sensor present (in sensor-name order) and, with ``drop_constant``, leaves out columns
    that never moved. Each asset's frames are in time order; assets follow one another.
    ``include_flagged`` keeps frames the quality gate flagged (for exports and backtests, never for
    training; ``flagged`` says which). ``envelope`` must be the live agent's (module docstring).
    """
    wins = featurize_windows(messages, gate, envelope=envelope)
    bad = [w for w in wins if isinstance(w, DataError)]
    if bad:
        raise DataError(f"{len(bad)} training window(s) cannot be used, e.g.: {bad[0]}")
    good: list[WindowFeatures] = wins  # type: ignore[assignment]
    if not good:
        raise DataError("no training windows; give known-good windows of every sensor the model should watch")
    names = list(features) if features is not None else _default_names(good)
    columns = frame_columns(names)
    builder = FrameBuilder(slot_s=slot_s, retention_s=max(DEFAULT_RETENTION_S, slot_s))
    rows, assets, stamps, flagged, skipped = [], [], [], [], 0
    # One window at a time, in time order, with the live agent's add -> take -> prune steps.
    for w in sorted(good, key=lambda w: (w.meta.asset_id, w.start)):
        asset = w.meta.asset_id
        frames, problems = builder.take(asset, "training", columns, builder.add(w))
        builder.prune(asset)
        if problems:
            raise ConfigError(problems[0])
        for f in frames:
            if f.values is None:
                continue
            if f.bad and not include_flagged:
                skipped += 1
                continue
            rows.append(f.values)
            assets.append(asset)
            stamps.append(f.ts)
            flagged.append(bool(f.bad))
    if not rows:
        sensors = sorted({s for s, _ in columns})
        raise DataError(f"no complete, quality-clean frame of sensors {sensors} in the training windows")
    X = np.vstack(rows)
    dropped: tuple[str, ...] = ()
    if features is None and drop_constant:
        spread = X.max(axis=0) - X.min(axis=0)
        moving = spread > 1e-9 * np.maximum(1.0, np.abs(X).max(axis=0))
        dropped = tuple(n for n, keep in zip(names, moving, strict=True) if not keep)
        X, names = X[:, moving], [n for n, keep in zip(names, moving, strict=True) if keep]
    return TrainingFrames(X, tuple(names), tuple(assets), tuple(stamps), skipped, dropped, tuple(flagged))


def _default_names(wins: Sequence[WindowFeatures]) -> list[str]:
    per_sensor: dict[str, tuple[str, tuple[str, ...]]] = {}
    for w in wins:
        per_sensor.setdefault(w.meta.sensor, (w.meta.kind, w.names))
    return [f"{s}.{f}" for s in sorted(per_sensor) for f in default_model_features(*per_sensor[s])]

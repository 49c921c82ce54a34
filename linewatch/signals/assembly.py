"""Align one-sensor windows into per-asset, multi-sensor frames on a common time grid.

Why
---
The ``signals`` topic carries windows of *one* sensor each, at that sensor's own rate and
start time: a 10 kHz accelerometer, a 2 kHz current clamp and a 1 Hz thermocouple on the
same motor arrive as separate messages, late, twice, or not at all. Multi-sensor detectors
(PCA across sensors, the autoencoder's per-sensor explanation) need the same instant of
every sensor side by side. :class:`FrameAssembler` does that alignment once, with a policy
that is written down and deterministic, so live scoring and replay build identical frames.

Frames
------
Frame ``k`` of an asset covers ``[k T, (k + 1) T)`` seconds since the Unix epoch
(``T = frame_seconds``), sampled at ``sample_rate_hz``. Epoch-aligned frames mean a
restarted worker, a replay and a second worker all cut time at the same instants.

Each sensor is put on the frame grid as follows:

- a sensor at least twice as fast as the grid is averaged over each grid cell (a boxcar:
  cheap anti-aliasing; a cell with no samples is missing);
- a slower sensor is held (zero-order hold, what a PLC does): each grid point takes the
  latest sample at or before it, if that sample is less than ``max(1/rate, max_gap_s)`` old.
  A 1 Hz sensor thus fills a 1 s frame, and a frame never depends on samples after it, so
  it does not change with *when* the next window happens to arrive (linear interpolation
  would need the next sample and make the frame depend on arrival timing);
- anything else is a gap: ``NaN`` in ``data`` and ``False`` in ``present``.

Policy for awkward input (deterministic, counted in :attr:`AssetState.counters`)
--------------------------------------------------------------------------------
- **warm-up**: a frame is ``ready=False`` until every expected sensor of the asset has
  delivered at least one window; detectors score such frames neutral.
- **emission**: frame ``k`` is emitted once every expected sensor has data at every grid
  point of it (complete), or once the asset's watermark is past ``(k + 1) T + lateness_s``
  (strictly). The watermark is the latest sample time seen on any sensor of the asset, or
  the time given to
  :meth:`FrameAssembler.advance` (the caller's clock; nothing here reads a clock or sleeps).
  Frames are emitted in order; a frame with no data from any sensor is skipped, not emitted.
- **out of order**: a window is merged wherever it falls, as long as some of it lies in a
  frame not yet emitted; a window entirely inside emitted frames is dropped (``late``).
  The first frame of an asset is the one holding the first window that arrived.
- **duplicates**: a window with the same sensor, start and length as a buffered one is
  dropped (``duplicate``); where windows overlap partially, the sample that arrived first wins.
- **rate change**: a window at a different rate than the sensor's buffered ones replaces
  them (``rate_change``): mixing rates would silently misplace samples.

>>> import numpy as np
>>> asm = FrameAssembler(sensors=("vib", "temp"), frame_seconds=1.0, sample_rate_hz=4.0)
>>> asm.add(SensorWindow("m1", "vib", 10.0, 8.0, np.arange(8, dtype=np.float32)))
[]
>>> frames = asm.add(SensorWindow("m1", "temp", 10.0, 1.0, np.array([40.0], dtype=np.float32)))
>>> f = frames[0]
>>> f.start, f.ready, f.data.tolist()
(10.0, True, [[0.5, 2.5, 4.5, 6.5], [40.0, 40.0, 40.0, 40.0]])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.detectors.base import load_state, save_state
from linewatch.errors import ConfigError, DataError

if TYPE_CHECKING:
    from linewatch.schemas.messages import SignalMeta

#: A sensor this many times faster than the grid is averaged per grid cell instead of held.
BOXCAR_MIN_RATIO = 2.0
#: Relative tolerance when comparing times and rates (float seconds since 1970 carry ~1e-7 s).
_REL_TOL = 1e-6
#: Time tolerance in seconds for comparisons of sample times relative to a frame start.
_TIME_TOL = 1e-9
_KIND = "frame_assembler"
COUNTERS = ("late", "duplicate", "rate_change", "skipped_frames", "windows")


@dataclass(frozen=True)
class SensorWindow:
    """One sensor's window as the ``signals`` topic carries it; ``start`` in POSIX seconds (UTC)."""

    asset_id: str
    sensor: str
    start: float
    sample_rate_hz: float
    samples: np.ndarray

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and self.sample_rate_hz > 0 and math.isfinite(self.sample_rate_hz)):
            raise DataError(
                f"window of {self.asset_id}/{self.sensor}: start={self.start!r} and "
                f"sample_rate_hz={self.sample_rate_hz!r} must be finite and the rate positive"
            )
        arr = np.asarray(self.samples, dtype=np.float32)
        if arr.ndim != 1 or arr.size == 0:
            raise DataError(f"window of {self.asset_id}/{self.sensor} must hold a non-empty 1-D sample array")
        object.__setattr__(self, "samples", arr)

    @property
    def end(self) -> float:
        """Time just after the last sample's slot: ``start + n / rate``."""
        return self.start + self.samples.size / self.sample_rate_hz

    @classmethod
    def from_meta(cls, meta: SignalMeta, samples: np.ndarray) -> SensorWindow:
        """Build from a decoded ``signals`` message header and its float32 samples."""
        if samples.size != meta.n_samples:
            raise DataError(f"header announces {meta.n_samples} samples but {samples.size} arrived")
        return cls(meta.asset_id, meta.sensor, meta.start.timestamp(), meta.sample_rate_hz, samples)


@dataclass(frozen=True)
class Frame:
    """All expected sensors of one asset over ``[start, start + n / sample_rate_hz)`` on one grid."""

    asset_id: str
    start: float
    sample_rate_hz: float
    sensors: tuple[str, ...]
    data: np.ndarray
    present: np.ndarray
    ready: bool

    @property
    def coverage(self) -> np.ndarray:
        """Fraction of grid points with data, per sensor."""
        return self.present.mean(axis=1)

    @property
    def complete(self) -> bool:
        """Every sensor has every grid point."""
        return bool(self.present.all())


@dataclass
class _SensorBuffer:
    rate: float
    starts: list[float] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)

    def ends(self) -> np.ndarray:
        return np.array([s + c.size / self.rate for s, c in zip(self.starts, self.chunks, strict=True)])


@dataclass
class AssetState:
    """Everything the assembler remembers about one asset: plain data, saved by :meth:`FrameAssembler.save`.

    ``counters`` counts, per :data:`COUNTERS` name, the windows handled by each policy branch.
    """

    next_frame: int | None = None
    seen: set[str] = field(default_factory=set)
    high_water: dict[str, float] = field(default_factory=dict)
    buffers: dict[str, _SensorBuffer] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))


class FrameAssembler:
    """Turns a stream of :class:`SensorWindow` into :class:`Frame` objects, per asset.

    Parameters
    ----------
    sensors:
        The sensors every frame has, in this order (the column order of multi-sensor models).
    frame_seconds, sample_rate_hz:
        Frame length and the common grid rate; ``frame_seconds * sample_rate_hz`` must be a
        whole number of samples.
    max_gap_s:
        How long a slow sensor's last sample is held to bridge a gap (at least one sample period).
    lateness_s:
        How long after a frame's end (by the watermark) to wait for stragglers before
        emitting it incomplete; ``None`` waits one frame length. Set it at least to the
        longest window of any sensor, or a slow sensor's windows always arrive "late".
    """

    def __init__(
        self,
        *,
        sensors: Sequence[str],
        frame_seconds: float,
        sample_rate_hz: float,
        max_gap_s: float = 0.0,
        lateness_s: float | None = None,
    ) -> None:
        self.sensors = tuple(sensors)
        self.frame_seconds = float(frame_seconds)
        self.sample_rate_hz = float(sample_rate_hz)
        self.max_gap_s = float(max_gap_s)
        self.lateness_s = lateness_s
        self._validate()
        self.assets: dict[str, AssetState] = {}

    def _validate(self) -> None:
        if not self.sensors or len(set(self.sensors)) != len(self.sensors):
            raise ConfigError(f"sensors={self.sensors!r} must be a non-empty list of distinct names")
        if not (self.frame_seconds > 0 and self.sample_rate_hz > 0):
            raise ConfigError("frame_seconds and sample_rate_hz must be positive")
        n = self.frame_seconds * self.sample_rate_hz
        if abs(n - round(n)) > _REL_TOL * max(1.0, n) or round(n) < 1:
            raise ConfigError(
                f"frame_seconds * sample_rate_hz = {n:g} is not a whole number of samples; "
                "pick e.g. frame_seconds=1.0 with an integer sample_rate_hz"
            )
        if self.max_gap_s < 0 or self.wait_s < 0:
            raise ConfigError("max_gap_s and lateness_s must be >= 0 seconds")

    @property
    def wait_s(self) -> float:
        """Effective lateness: ``lateness_s``, or one frame length when it is ``None``."""
        return self.frame_seconds if self.lateness_s is None else float(self.lateness_s)

    @property
    def frame_samples(self) -> int:
        return round(self.frame_seconds * self.sample_rate_hz)

    # ------------------------------------------------------------------ ingest
    def add(self, window: SensorWindow) -> list[Frame]:
        """Buffer one window and return the frames it made ready (possibly none)."""
        if window.sensor not in self.sensors:
            raise DataError(
                f"sensor {window.sensor!r} of asset {window.asset_id!r} is not one of the assembler's "
                f"sensors {self.sensors}; add it to the configuration or route it elsewhere"
            )
        st = self.assets.setdefault(window.asset_id, AssetState())
        st.counters["windows"] += 1
        T = self.frame_seconds
        if st.next_frame is not None and window.end <= st.next_frame * T + _REL_TOL:
            st.counters["late"] += 1
            return []
        buf = st.buffers.get(window.sensor)
        if buf is None or abs(buf.rate - window.sample_rate_hz) > _REL_TOL * buf.rate:
            if buf is not None:
                st.counters["rate_change"] += 1
            buf = st.buffers[window.sensor] = _SensorBuffer(rate=window.sample_rate_hz)
        half_sample = 0.5 / buf.rate
        for s, c in zip(buf.starts, buf.chunks, strict=True):
            if abs(s - window.start) < half_sample and c.size == window.samples.size:
                st.counters["duplicate"] += 1
                return []
        buf.starts.append(window.start)
        buf.chunks.append(window.samples)
        st.seen.add(window.sensor)
        st.high_water[window.sensor] = max(st.high_water.get(window.sensor, -math.inf), window.end)
        if st.next_frame is None:
            st.next_frame = math.floor(window.start / T + _REL_TOL)
        return self._emit(window.asset_id, st, watermark=max(st.high_water.values()))

    def add_many(self, windows: Iterable[SensorWindow]) -> list[Frame]:
        """:meth:`add` each window in order; all frames made ready, in emission order."""
        out: list[Frame] = []
        for w in windows:
            out.extend(self.add(w))
        return out

    def advance(self, now: float) -> list[Frame]:
        """Emit frames every asset has waited ``lateness_s`` for, by the caller's clock ``now``."""
        out: list[Frame] = []
        for asset in sorted(self.assets):
            out.extend(self._emit(asset, self.assets[asset], watermark=now))
        return out

    # ------------------------------------------------------------------ emit
    def _emit(self, asset: str, st: AssetState, *, watermark: float) -> list[Frame]:
        out: list[Frame] = []
        T = self.frame_seconds
        while st.next_frame is not None:
            k = st.next_frame
            t0, t1 = k * T, (k + 1) * T
            overdue = watermark > t1 + self.wait_s
            # High water past the frame end is necessary for completeness, not sufficient: an
            # earlier window of that sensor may still be on its way (out of order).
            all_in = all(st.high_water.get(s, -math.inf) >= t1 - _REL_TOL for s in self.sensors)
            if not (all_in or overdue):
                break
            frame = self._build(asset, st, t0)
            if not overdue and not frame.complete:
                break
            if frame.present.any():
                out.append(frame)
                st.next_frame = k + 1
            else:
                st.counters["skipped_frames"] += 1
                st.next_frame = self._next_frame_with_data(st, t1)
            self._trim(st)
        return out

    def _next_frame_with_data(self, st: AssetState, after: float) -> int:
        """Jump over a silent stretch in one step instead of walking it frame by frame."""
        later = [e for b in st.buffers.values() for e in b.ends() if e > after]
        T = self.frame_seconds
        if not later:
            return math.floor(after / T + _REL_TOL)
        starts = [
            max(s, after)
            for b in st.buffers.values()
            for s, e in zip(b.starts, b.ends(), strict=True)
            if e > after
        ]
        return math.floor(min(starts) / T + _REL_TOL)

    def _trim(self, st: AssetState) -> None:
        """Forget chunks no future frame can use (keeping what a hold across the frame edge needs)."""
        assert st.next_frame is not None
        horizon = st.next_frame * self.frame_seconds
        for buf in st.buffers.values():
            keep_after = horizon - max(self.max_gap_s, 1.0 / buf.rate) - 1.0 / buf.rate
            ends = buf.ends()
            keep = [i for i in range(len(buf.starts)) if ends[i] > keep_after]
            buf.starts = [buf.starts[i] for i in keep]
            buf.chunks = [buf.chunks[i] for i in keep]

    def _build(self, asset: str, st: AssetState, t0: float) -> Frame:
        n = self.frame_samples
        data = np.full((len(self.sensors), n), np.nan, dtype=np.float32)
        present = np.zeros((len(self.sensors), n), dtype=bool)
        for j, s in enumerate(self.sensors):
            buf = st.buffers.get(s)
            if buf is None or not buf.chunks:
                continue
            vals, ok = self._resample(buf, t0)
            data[j, ok] = vals[ok]
            present[j] = ok
        ready = all(s in st.seen for s in self.sensors)
        return Frame(asset, t0, self.sample_rate_hz, self.sensors, data, present, ready)

    def _samples(
        self, buf: _SensorBuffer, lo: float, hi: float, origin: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample times (seconds after ``origin``) and values in ``[lo, hi]``, sorted, first arrival winning.

        Times are taken relative to the frame start before adding the sample offsets: absolute
        POSIX seconds carry only ~0.2 µs of resolution, too coarse to place 10 kHz samples in cells.
        """
        sel = [
            i for i, (s, c) in enumerate(zip(buf.starts, buf.chunks, strict=True))
            if s <= hi and s + c.size / buf.rate >= lo
        ]
        if not sel:
            return np.empty(0), np.empty(0)
        t = np.concatenate([(buf.starts[i] - origin) + np.arange(buf.chunks[i].size) / buf.rate for i in sel])
        vals = np.concatenate([buf.chunks[i] for i in sel]).astype(np.float64)
        # Sample index on the sensor's own clock identifies a sample; np.unique keeps the first arrival.
        key = np.concatenate(
            [round(buf.starts[i] * buf.rate) + np.arange(buf.chunks[i].size, dtype=np.int64) for i in sel]
        )
        _, first = np.unique(key, return_index=True)
        return t[first], vals[first]

    def _resample(self, buf: _SensorBuffer, t0: float) -> tuple[np.ndarray, np.ndarray]:
        n, fs = self.frame_samples, self.sample_rate_hz
        span = n / fs
        hold = max(self.max_gap_s, 1.0 / buf.rate)
        times, vals = self._samples(buf, t0 - hold, t0 + span, origin=t0)
        if times.size == 0:
            return np.zeros(n), np.zeros(n, dtype=bool)
        eps = _TIME_TOL
        if buf.rate >= BOXCAR_MIN_RATIO * fs:
            inside = (times >= -eps) & (times < span - eps)
            cell = np.clip(np.floor((times[inside] + eps) * fs).astype(np.int64), 0, n - 1)
            counts = np.bincount(cell, minlength=n)
            sums = np.bincount(cell, weights=vals[inside], minlength=n)
            ok = counts > 0
            return np.divide(sums, counts, out=np.zeros(n), where=ok), ok
        grid = np.arange(n) / fs
        p = np.searchsorted(times, grid + eps, side="right") - 1  # last sample at or before each grid point
        pc = np.clip(p, 0, None)
        ok = (p >= 0) & (grid - times[pc] < hold - eps)
        return vals[pc], ok

    # ------------------------------------------------------------------ state
    def save(self, path: str | Path) -> None:
        """Write the buffered state of every asset (``metadata.json`` + ``arrays.npz``)."""
        assets: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for asset in sorted(self.assets):
            st = self.assets[asset]
            bufs = {}
            for s in sorted(st.buffers):
                b = st.buffers[s]
                keys = []
                for start, chunk in zip(b.starts, b.chunks, strict=True):
                    key = f"c{len(arrays)}"
                    arrays[key] = chunk
                    keys.append([start, key])
                bufs[s] = {"rate": b.rate, "chunks": keys}
            assets[asset] = {
                "next_frame": st.next_frame,
                "seen": sorted(st.seen),
                "high_water": st.high_water,
                "buffers": bufs,
                "counters": st.counters,
            }
        params = {
            "sensors": list(self.sensors),
            "frame_seconds": self.frame_seconds,
            "sample_rate_hz": self.sample_rate_hz,
            "max_gap_s": self.max_gap_s,
            "lateness_s": self.lateness_s,
            "assets": assets,
        }
        save_state(path, kind=_KIND, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> FrameAssembler:
        """Restore what :meth:`save` wrote; the next frames are identical to an uninterrupted run."""
        params, arrays = load_state(path, kind=_KIND)
        assets = params.pop("assets")
        asm = cls(**params)
        for asset, d in assets.items():
            st = AssetState(
                next_frame=d["next_frame"],
                seen=set(d["seen"]),
                high_water={k: float(v) for k, v in d["high_water"].items()},
                counters={k: int(v) for k, v in d["counters"].items()},
            )
            for s, b in d["buffers"].items():
                st.buffers[s] = _SensorBuffer(
                    rate=float(b["rate"]),
                    starts=[float(start) for start, _ in b["chunks"]],
                    chunks=[arrays[key] for _, key in b["chunks"]],
                )
            asm.assets[asset] = st
        return asm

"""A simulated multimodal plant: assets that make parts (SPC records + camera frames) and run machines (signals).

Why one plant rather than three simulators side by side: fusing modalities needs data in which
the modalities belong together. Here every asset is one machining cell:

- a part leaves the cell every ``part_interval_s``; the station measures it (an
  :class:`~linewatch.schemas.messages.SpcRecord` with the six characteristics of
  :mod:`linewatch.simulation.spc`) and photographs it (a
  :class:`~linewatch.producers.frames.CameraFrame` drawn by :mod:`linewatch.simulation.frames`),
  both under one ``part_id`` and one timestamp, so fusion can join them per part;
- the cell's spindle is watched by vibration, current and temperature snapshots every
  ``snapshot_interval_s`` (drawn by :mod:`linewatch.simulation.signals`), starting on whole seconds
  so the live agent's 1 s slots frame the three sensors of a snapshot into one row, and carrying
  the drive's shaft speed so the bearing envelope features are computed;
- machine states (``running``, ``idle``, ``changeover``) go to ``machine_states`` whenever they
  change and ride on every input as ``machine_state``; an idle cell makes no parts while its
  signals keep coming at no load.

Faults (:data:`FAULT_KINDS`), each an episode with a start and an end (a repair), and the
modalities and names a correct explanation must carry (:class:`FaultEpisode` ``culprits``):

- ``bearing_fault``: outer-race impacts in vibration (envelope, kurtosis, high bands) that grow
  from the start; after :data:`BEARING_SPC_DELAY` of the episode the spindle's runout shows in the
  parts' ``shaft_runout_um`` (breaking its correlation with the bore);
- ``tool_wear``: ``bore_diameter_mm`` and ``surface_roughness_um`` drift away, growing, and the
  parts' images show scratches ever more often;
- ``cosmetic_defect``: colour patches (rust, stains) in the images only;
- ``combined_subtle``: every part in the episode is moderately unusual in SPC (a random-sign
  displacement against the process correlation, :data:`SUBTLE_SPC_MAHALANOBIS`) and in its image
  (a faint colour patch blended in at :data:`SUBTLE_FRAME_ALPHA`): each modality's tail probability is
  around 1e-2..1e-3, so neither alone should alert at 1e-3 but their combination should.

Drift events (:data:`DRIFT_KINDS`) are not faults: ``lighting_change`` multiplies an asset's
frames by a gain from then on, ``sensor_recalibration`` offsets its temperature (or scales its
vibration or current) from then on. Neither is in :attr:`PlantSimulation.episodes`.

Everything is a pure function of the config, the schedule and the seed.

>>> sim = simulate_plant(PlantConfig(duration_s=600.0, frame_size=64), faults=[], idle=[])
>>> len(sim.spc_records()), len(sim.signal_messages()), [m.state for m in sim.machine_states()]
(180, 540, ['running', 'running', 'running'])
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np

from linewatch.errors import ConfigError
from linewatch.producers.frames import CameraFrame, encode_frame
from linewatch.schemas.codec import encode, encode_signal
from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import MachineState, SignalMeta, SpcRecord, SpecLimit
from linewatch.schemas.topics import FRAMES, MACHINE_STATES, SIGNALS, SPC
from linewatch.signals.windows import DEFAULT_UNITS
from linewatch.simulation.frames import render_frame
from linewatch.simulation.signals import I_FULL_LOAD, I_NO_LOAD, SENSORS, Fault, simulate_signals
from linewatch.simulation.spc import CORRELATION, FEATURES, NOMINAL, SIGMA, SPEC_WIDTH_SIGMA
from linewatch.simulation.spc import SpcSimulation as _SpcTable

FAULT_KINDS: tuple[str, ...] = ("bearing_fault", "tool_wear", "cosmetic_defect", "combined_subtle")
DRIFT_KINDS: tuple[str, ...] = ("lighting_change", "sensor_recalibration")
IDLE_STATES: tuple[str, ...] = ("idle", "changeover")
RUNNING = "running"
#: 2026-01-05T06:00:00Z, the SPC simulator's default start.
DEFAULT_START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)

#: Share of a bearing episode before the runout shows in the parts (the bearing must wear first).
BEARING_SPC_DELAY = 0.4
#: Runout shift at full severity, in sigmas of ``shaft_runout_um``.
BEARING_RUNOUT_SIGMA = 4.0
#: Share of a bearing episode over which its vibration severity grows (quadratically) to full.
BEARING_GROWTH = 0.3
#: Share of a tool-wear episode over which the wear grows (linearly) to full.
WEAR_GROWTH = 0.5
#: Drift of bore and roughness at full wear, in sigmas.
WEAR_SPC_SIGMA = 4.0
#: Mahalanobis length of the subtle fault's SPC displacement: with 6 characteristics the
#: distance² is a noncentral chi²(6, 3.5²) whose median (~17.5) sits at a tail of ~1e-2..5e-3.
SUBTLE_SPC_MAHALANOBIS = 3.5
#: Share of a colour patch's contrast the subtle fault blends into a part's image: at 0.4 the
#: plant's 128 px PatchCore gives a median tail of ~2e-2 (flagging ~40 % at its 1e-2 target).
SUBTLE_FRAME_ALPHA = 0.4
#: The cosmetic defect: colour patches (rust, stains). Spots of 3-6 px are too small for a 128 px
#: model (27 % flagged), so the camera-only fault uses patches, which it flags ~80 % of the time.
COSMETIC_DEFECT = "colour_patch"
#: The characteristics each fault moves, as an explanation must name them.
_SPC_CULPRITS = {
    "bearing_fault": ("shaft_runout_um",),
    "tool_wear": ("bore_diameter_mm", "surface_roughness_um"),
    "combined_subtle": ("bore_diameter_mm", "shaft_runout_um"),
}
#: What an explanation of an image score names (``"region x0,y0-x1,y1"``).
FRAME_CULPRIT = "region"


@dataclass(frozen=True)
class PlantConfig:
    """The plant's layout and clocks, sized by default for a 60 s demo on 2 cores.

    ``skus`` has one SKU shared by every asset, or one per asset. 4 kHz vibration and 1 kHz current
    over 0.5 s windows keep the 3 kHz bearing resonance below Nyquist and give 2000 / 500 samples,
    enough for every spectral and envelope feature.
    """

    assets: tuple[str, ...] = ("cell-1", "cell-2", "cell-3")
    skus: tuple[str, ...] = ("bracket-a",)
    camera: str = "cam-1"
    part_interval_s: float = 10.0
    snapshot_interval_s: float = 10.0
    window_s: float = 0.5
    vibration_rate: float = 4000.0
    current_rate: float = 1000.0
    temperature_rate: float = 1.0
    frame_size: int = 128
    duration_s: float = 3600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.assets or len(set(self.assets)) != len(self.assets):
            raise ConfigError(f"assets={self.assets!r} must be one or more distinct names")
        if len(self.skus) not in (1, len(self.assets)):
            raise ConfigError(f"give one SKU for every asset or one shared SKU, got {len(self.skus)} for "
                              f"{len(self.assets)} assets")
        if min(self.part_interval_s, self.snapshot_interval_s, self.duration_s, self.window_s) <= 0:
            raise ConfigError("part_interval_s, snapshot_interval_s, window_s and duration_s must be positive")
        if self.snapshot_interval_s != round(self.snapshot_interval_s) or self.snapshot_interval_s < 1:
            raise ConfigError(f"snapshot_interval_s={self.snapshot_interval_s} must be a whole number of seconds "
                              "(the signals agent frames sensors in 1 s slots)")

    def sku_of(self, asset: str) -> str:
        return self.skus[0] if len(self.skus) == 1 else self.skus[self.assets.index(asset)]


@dataclass(frozen=True)
class PlantFault:
    """One fault episode on one asset: from ``start_s`` (plant seconds after the start) for ``duration_s``."""

    asset: str
    kind: str
    start_s: float
    duration_s: float
    severity: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if self.duration_s <= 0 or self.start_s < 0 or not 0 < self.severity <= 3:
            raise ConfigError("a fault needs start_s >= 0, duration_s > 0 and severity in (0, 3]")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class DriftEvent:
    """A step that stays: ``lighting_change`` (frame gain ``magnitude``) or ``sensor_recalibration``
    (``sensor`` temperature: offset of ``magnitude`` °C; vibration or current: gain ``magnitude``)."""

    asset: str
    kind: str
    start_s: float
    magnitude: float | None = None
    sensor: str = "temperature"

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ConfigError(f"drift kind {self.kind!r}; use one of {', '.join(DRIFT_KINDS)}")
        if self.sensor not in SENSORS:
            raise ConfigError(f"sensor {self.sensor!r}; use one of {', '.join(SENSORS)}")

    @property
    def size(self) -> float:
        if self.magnitude is not None:
            return self.magnitude
        if self.kind == "lighting_change":
            return 1.25
        return 5.0 if self.sensor == "temperature" else 1.3


@dataclass(frozen=True)
class IdlePeriod:
    """An asset makes no parts from ``start_s`` for ``duration_s``; its spindle turns at no load."""

    asset: str
    start_s: float
    duration_s: float
    state: str = "idle"

    def __post_init__(self) -> None:
        if self.state not in IDLE_STATES:
            raise ConfigError(f"state {self.state!r}; use one of {', '.join(IDLE_STATES)}")
        if self.duration_s <= 0 or self.start_s < 0:
            raise ConfigError("an idle period needs start_s >= 0 and duration_s > 0")


@dataclass(frozen=True)
class FaultEpisode:
    """Ground truth of one fault: where and when, which modalities show it and what names explain it.

    ``onsets`` says when each modality starts to show it (a bearing reaches the parts later).
    """

    asset_id: str
    kind: str
    start: datetime
    end: datetime
    modalities: tuple[str, ...]
    culprits: dict[str, tuple[str, ...]]
    onsets: dict[str, datetime] = field(default_factory=dict)


def default_schedule(config: PlantConfig) -> tuple[list[PlantFault], list[IdlePeriod]]:
    """The demo's schedule: one bearing fault, one tool wear, one cosmetic defect and one idle period.

    Spread over the assets in turn, each episode in the middle of the run (quiet time before it
    for warm-up, and after it so alerts can close); the idle period sits on the cosmetic asset
    after its episode, and with a single asset the episodes follow one another.
    """
    d, a = config.duration_s, config.assets
    if len(a) >= 3:
        faults = [PlantFault(a[0], "bearing_fault", 0.20 * d, 0.40 * d),
                  PlantFault(a[1], "tool_wear", 0.25 * d, 0.35 * d),
                  PlantFault(a[2], "cosmetic_defect", 0.30 * d, 0.20 * d)]
        idle = [IdlePeriod(a[2], 0.65 * d, 0.08 * d)]
    else:
        kinds = ("bearing_fault", "tool_wear", "cosmetic_defect")
        faults = [PlantFault(a[i % len(a)], k, (0.08 + 0.26 * i) * d, 0.18 * d) for i, k in enumerate(kinds)]
        idle = [IdlePeriod(a[-1], 0.86 * d, 0.05 * d)]
    return faults, idle


def _modalities(kind: str) -> tuple[str, ...]:
    return {"bearing_fault": ("signals", "spc"), "tool_wear": ("spc", "frames"),
            "cosmetic_defect": ("frames",), "combined_subtle": ("spc", "frames")}[kind]


def _culprits(kind: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    if kind == "bearing_fault":
        out["signals"] = ("vibration.",)
    if kind in _SPC_CULPRITS:
        out["spc"] = _SPC_CULPRITS[kind]
    if "frames" in _modalities(kind):
        out["frames"] = (FRAME_CULPRIT,)
    return out


# ---------------------------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class _Parts:
    """Every part in production order (all assets interleaved by time)."""

    asset: np.ndarray  # (n,) str
    part_id: np.ndarray  # (n,) str
    t: np.ndarray  # (n,) plant seconds since the start
    X: np.ndarray  # (n, d)
    defect: np.ndarray  # (n,) str: "" or a frame defect type
    alpha: np.ndarray  # (n,) share of the defect's contrast in the image
    gain: np.ndarray  # (n,) lighting gain of the image
    index: np.ndarray  # (n,) the part's number on its asset (seeds its image)


def _state_at(t: np.ndarray, asset: str, idle: Sequence[IdlePeriod]) -> np.ndarray:
    """Machine state of ``asset`` at plant seconds ``t``."""
    state = np.full(t.shape, RUNNING, dtype=object)
    for p in idle:
        if p.asset == asset:
            state[(t >= p.start_s) & (t < p.start_s + p.duration_s)] = p.state
    return state


def _ramp(t: np.ndarray, f: PlantFault, lo: float, growth: float) -> np.ndarray:
    """0 before ``lo`` of the episode, then linear to 1 over ``growth`` of it, 0 after the end."""
    x = (t - f.start_s - lo * f.duration_s) / max(growth * f.duration_s, 1e-9)
    inside = (t >= f.start_s + lo * f.duration_s) & (t < f.end_s)
    return np.where(inside, np.clip(x, 0.0, 1.0), 0.0)


def _subtle_direction() -> np.ndarray:
    """Unit-Mahalanobis displacement of bore and runout against their +0.9 correlation.

    Each characteristic moves by only ~0.2 sigma, so univariate charts stay quiet, while the pair
    leaves the correlation ellipse: only a multivariate model sees it, and names bore and runout.
    """
    d = np.zeros(len(FEATURES))
    d[0], d[1] = 1.0, -1.0
    return d / np.sqrt(d @ np.linalg.solve(CORRELATION, d))


def _make_parts(config: PlantConfig, faults: Sequence[PlantFault], drift: Sequence[DriftEvent],
                idle: Sequence[IdlePeriod]) -> _Parts:
    chol = np.linalg.cholesky(CORRELATION)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in _Parts.__dataclass_fields__}
    n_assets = len(config.assets)
    for a, asset in enumerate(config.assets):
        rng = np.random.default_rng([config.seed, 11, a])
        # Assets are staggered within a part interval, so their parts do not all arrive at once.
        t = np.arange(a * config.part_interval_s / n_assets, config.duration_s, config.part_interval_s)
        t = t[_state_at(t, asset, idle) == RUNNING]
        n = t.size
        z = rng.standard_normal((n, len(FEATURES))) @ chol.T
        defect = np.full(n, "", dtype=object)
        alpha = np.ones(n)
        draw = rng.random(n)
        signs = rng.choice([-1.0, 1.0], n)
        for f in (f for f in faults if f.asset == asset):
            inside = (t >= f.start_s) & (t < f.end_s)
            if f.kind == "bearing_fault":
                z[:, 1] += f.severity * BEARING_RUNOUT_SIGMA * _ramp(t, f, BEARING_SPC_DELAY, 0.3)
            elif f.kind == "tool_wear":
                wear = f.severity * _ramp(t, f, 0.0, WEAR_GROWTH)
                z[:, 0] += WEAR_SPC_SIGMA * wear
                z[:, 3] += WEAR_SPC_SIGMA * wear
                defect[inside & (draw < np.clip(1.5 * wear, 0.0, 1.0))] = "scratch"
            elif f.kind == "cosmetic_defect":
                defect[inside & (draw < min(1.0, f.severity))] = COSMETIC_DEFECT
            else:  # combined_subtle
                z[inside] += (signs[inside, None] * SUBTLE_SPC_MAHALANOBIS * f.severity) * _subtle_direction()
                defect[inside] = COSMETIC_DEFECT
                alpha[inside] = min(1.0, SUBTLE_FRAME_ALPHA * f.severity)
        gain = np.ones(n)
        for d in (d for d in drift if d.asset == asset and d.kind == "lighting_change"):
            gain[t >= d.start_s] *= d.size
        part_no = np.arange(n)
        cols["asset"].append(np.full(n, asset, dtype=object))
        cols["part_id"].append(np.array([f"{asset}-P{k:06d}" for k in part_no], dtype=object))
        cols["t"].append(t)
        cols["X"].append(NOMINAL + z * SIGMA)
        cols["defect"].append(defect)
        cols["alpha"].append(alpha)
        cols["gain"].append(gain)
        cols["index"].append(part_no)
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.argsort(merged["t"], kind="stable")
    return _Parts(**{k: v[order] for k, v in merged.items()})


def _render_part(sku: str, size: int, seed: list[int], defect: str, alpha: float, gain: float) -> np.ndarray:
    """One part's image: good, or with ``defect`` at ``alpha`` of its contrast, under lighting ``gain``.

    A faint defect blends the good and the defective render of the *same* part (identically seeded,
    :func:`render_frame` draws the same part and light), so only the defect's contrast changes.
    """
    good, _ = render_frame(sku, defect=None, size=size, rng=np.random.default_rng(seed)) if (
        not defect or alpha < 1.0) else (None, None)
    img: np.ndarray
    if defect:
        bad, _ = render_frame(sku, defect=defect, size=size, rng=np.random.default_rng(seed))
        img = bad if good is None else good + alpha * (bad.astype(np.float32) - good)
    else:
        img = good  # type: ignore[assignment]
    if gain != 1.0 or img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float32) * gain), 0, 255).astype(np.uint8)
    return img


# ---------------------------------------------------------------------------------------------- signals
def _signal_arrays(config: PlantConfig, faults: Sequence[PlantFault], drift: Sequence[DriftEvent],
                   idle: Sequence[IdlePeriod], seed: int, duration_s: float):
    """Healthy and faulty simulations of every asset's spindle, merged per snapshot."""
    common = dict(n_machines=len(config.assets), duration_s=duration_s,
                  snapshot_interval_s=config.snapshot_interval_s, window_s=config.window_s,
                  vibration_rate=config.vibration_rate, current_rate=config.current_rate,
                  temperature_rate=config.temperature_rate, start=0.0, seed=seed)
    healthy = simulate_signals(faults=[], **common)  # type: ignore[arg-type]
    bearing = [f for f in faults if f.kind == "bearing_fault"]
    arrays = {s: getattr(healthy, s).copy() for s in SENSORS}
    if bearing:
        sim_faults = [Fault(config.assets.index(f.asset), "outer_race", onset_s=f.start_s,
                            growth_s=BEARING_GROWTH * f.duration_s, max_severity=min(f.severity, 10.0))
                      for f in bearing]
        faulty = simulate_signals(faults=sim_faults, **common)  # type: ignore[arg-type]
        for f in bearing:
            m = config.assets.index(f.asset)
            w = (faulty.elapsed >= f.start_s) & (faulty.elapsed < f.end_s)
            for s in SENSORS:
                arrays[s][m, w] = getattr(faulty, s)[m, w]
    elapsed = healthy.elapsed
    states = np.stack([_state_at(elapsed, a, idle) for a in config.assets])
    load = healthy.load
    # No cutting load while idle: the current falls to its no-load level and the machine vibrates less.
    no_load = states != RUNNING
    scale = I_NO_LOAD / (I_NO_LOAD + (I_FULL_LOAD - I_NO_LOAD) * load)
    arrays["current"][no_load] *= scale[no_load, None].astype(np.float32)
    arrays["vibration"][no_load] *= np.float32(0.6)
    for d in drift:
        if d.kind != "sensor_recalibration":
            continue
        m = config.assets.index(d.asset)
        after = elapsed >= d.start_s
        if d.sensor == "temperature":
            arrays["temperature"][m, after] += np.float32(d.size)
        else:
            arrays[d.sensor][m, after] *= np.float32(d.size)
    return arrays, healthy.shaft_hz, states, elapsed, healthy.rates


def _signal_messages(config: PlantConfig, t0: float, arrays, shaft_hz, states, elapsed, rates
                     ) -> list[tuple[SignalMeta, np.ndarray]]:
    out = []
    for w, e in enumerate(elapsed.tolist()):
        start = datetime.fromtimestamp(t0 + e, UTC)
        for m, asset in enumerate(config.assets):
            for s in SENSORS:
                samples = arrays[s][m, w]
                out.append((SignalMeta(
                    asset_id=asset, sensor=s, kind=s, unit=DEFAULT_UNITS[s], start=start,  # type: ignore[arg-type]
                    sample_rate_hz=rates[s], n_samples=int(samples.size),
                    speed_hz=float(shaft_hz[m, w]) if s == "vibration" else None,
                    machine_state=str(states[m, w])), samples))
    return out


# ---------------------------------------------------------------------------------------------- the plant
@dataclass(frozen=True)
class PlantSimulation:
    """One simulated run: every input of every asset, its machine states and the ground truth."""

    config: PlantConfig
    start: datetime
    faults: tuple[PlantFault, ...]
    drift: tuple[DriftEvent, ...]
    idle: tuple[IdlePeriod, ...]
    parts: _Parts
    signals: tuple[tuple[SignalMeta, np.ndarray], ...]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.config.duration_s)

    @property
    def span(self) -> tuple[datetime, datetime]:
        """The plant time the run covers, ``[start, end)``."""
        return self.start, self.end

    def _ts(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=float(seconds))

    @cached_property
    def episodes(self) -> tuple[FaultEpisode, ...]:
        """One :class:`FaultEpisode` per injected fault, in schedule order."""
        out = []
        for f in self.faults:
            onsets = {m: self._ts(f.start_s) for m in _modalities(f.kind)}
            if f.kind == "bearing_fault":
                onsets["spc"] = self._ts(f.start_s + BEARING_SPC_DELAY * f.duration_s)
            out.append(FaultEpisode(f.asset, f.kind, self._ts(f.start_s), self._ts(f.end_s), _modalities(f.kind),
                                    _culprits(f.kind), onsets))
        return tuple(out)

    def state_at(self, asset: str, ts: datetime) -> str:
        """The machine state of ``asset`` at ``ts`` (``running`` unless inside one of its idle periods)."""
        t = np.array([(ts - self.start).total_seconds()])
        return str(_state_at(t, asset, self.idle)[0])

    def spc_records(self) -> list[SpcRecord]:
        """Every part's measurement, in time order, with spec limits at ±4.5 sigma."""
        p, names = self.parts, FEATURES
        half = SPEC_WIDTH_SIGMA * SIGMA
        limits = {n: SpecLimit(lsl=float(c - h), usl=float(c + h), target=float(c))
                  for n, c, h in zip(names, NOMINAL, half, strict=True)}
        out = []
        for i in range(len(p.t)):
            ts = self._ts(p.t[i])
            out.append(SpcRecord(asset_id=str(p.asset[i]), sku=self.config.sku_of(str(p.asset[i])),
                                 part_id=str(p.part_id[i]), ts=ts,
                                 values=dict(zip(names, map(float, p.X[i]), strict=True)), limits=limits,
                                 shift=("night", "early", "late")[ts.hour // 8], machine_state=RUNNING))
        return out

    def _image(self, i: int) -> np.ndarray:
        """Part ``i``'s image (drawn on demand: a pure function of the config and the part)."""
        p, c = self.parts, self.config
        asset = str(p.asset[i])
        return _render_part(c.sku_of(asset), c.frame_size, [c.seed, 23, c.assets.index(asset), int(p.index[i])],
                            str(p.defect[i]), float(p.alpha[i]), float(p.gain[i]))

    def _camera_frame(self, i: int) -> CameraFrame:
        p, c = self.parts, self.config
        asset = str(p.asset[i])
        return CameraFrame(asset, c.camera, c.sku_of(asset), str(p.part_id[i]), self._ts(p.t[i]), self._image(i),
                           machine_state=RUNNING)

    def camera_frames(self) -> list[CameraFrame]:
        """Every part's image, same ``part_id`` and timestamp as its SPC record."""
        return [self._camera_frame(i) for i in range(len(self.parts.t))]

    def frame_labels(self) -> list[str]:
        """Each frame's drawn defect (``good`` or a defect type), aligned with :meth:`camera_frames`."""
        return [str(d) or "good" for d in self.parts.defect]

    def signal_messages(self) -> list[tuple[SignalMeta, np.ndarray]]:
        """Every sensor window, in time order (assets and sensors interleaved per snapshot)."""
        return list(self.signals)

    def machine_states(self) -> list[MachineState]:
        """``running`` for every asset at the start, then every change, in time order."""
        out = [MachineState(asset_id=a, ts=self.start, state=RUNNING, reason="shift start")
               for a in self.config.assets]
        for p in sorted(self.idle, key=lambda p: p.start_s):
            out.append(MachineState(asset_id=p.asset, ts=self._ts(p.start_s), state=p.state,
                                    reason=f"planned {p.state}"))
            out.append(MachineState(asset_id=p.asset, ts=self._ts(p.start_s + p.duration_s), state=RUNNING,
                                    reason=f"{p.state} over"))
        return sorted(out, key=lambda m: m.ts)

    @cached_property
    def truth(self) -> dict[uuid.UUID, int]:
        """Event id -> index into :attr:`episodes` for every event inside an episode.

        Covers SPC records, frames, signal windows and the signals agent's frame scores
        (``event_id("signal_frame", asset, slot start)``), each only from the onset of its modality.
        """
        out: dict[uuid.UUID, int] = {}
        p, cam = self.parts, self.config.camera
        for k, ep in enumerate(self.episodes):
            for i in np.flatnonzero(p.asset == ep.asset_id):
                ts = self._ts(p.t[i])
                iso = ts.isoformat()
                if "spc" in ep.onsets and ep.onsets["spc"] <= ts < ep.end:
                    out[event_id("spc", ep.asset_id, str(p.part_id[i]), iso)] = k
                if "frames" in ep.onsets and ep.onsets["frames"] <= ts < ep.end:
                    out[event_id("frame", ep.asset_id, cam, str(p.part_id[i]), iso)] = k
            if "signals" in ep.onsets:
                for meta, _ in self.signals:
                    if meta.asset_id == ep.asset_id and ep.onsets["signals"] <= meta.start < ep.end:
                        out[meta.event_id] = k
                        out[event_id("signal_frame", ep.asset_id, meta.start.isoformat())] = k
        return out

    def iter_messages(self, *, encoding: str = "png") -> Iterator[tuple[str, bytes, bytes, datetime]]:
        """Every message as ``(topic, key, value, event time)``, merged in event-time order, encoded lazily.

        Images are drawn and every message encoded only as it is pulled, so a paced producer spreads
        that work over the stream instead of paying it up front. Machine states come first at equal
        times (the state holds from its timestamp on).
        """
        p = self.parts
        states = self.machine_states()
        records = self.spc_records()
        order: list[tuple[datetime, int, int]] = [(m.ts, 0, k) for k, m in enumerate(states)]
        order += [(self._ts(p.t[i]), 1, i) for i in range(len(p.t))]
        order += [(self._ts(p.t[i]), 2, i) for i in range(len(p.t))]
        order += [(m.start, 3, k) for k, (m, _) in enumerate(self.signals)]
        order.sort(key=lambda r: (r[0], r[1]))
        for ts, kind, k in order:
            if kind == 0:
                yield MACHINE_STATES.name, states[k].asset_id.encode(), encode(states[k]), ts
            elif kind == 1:
                yield SPC.name, records[k].asset_id.encode(), encode(records[k]), ts
            elif kind == 2:
                frame = self._camera_frame(k)
                yield FRAMES.name, frame.asset_id.encode(), encode_frame(frame, encoding), ts
            else:
                meta, samples = self.signals[k]
                yield SIGNALS.name, meta.asset_id.encode(), encode_signal(meta, samples), ts

    def messages(self, *, encoding: str = "png") -> list[tuple[str, bytes, bytes, datetime]]:
        """:meth:`iter_messages` as a list."""
        return list(self.iter_messages(encoding=encoding))


def simulate_plant(
    config: PlantConfig | None = None,
    faults: Sequence[PlantFault] | None = None,
    drift: Sequence[DriftEvent] = (),
    idle: Sequence[IdlePeriod] | None = None,
    start: datetime = DEFAULT_START,
) -> PlantSimulation:
    """Simulate ``config``'s plant from ``start`` (floored to a whole second, for the signal slots).

    ``faults=None`` is :func:`default_schedule` (its faults, and its idle period unless ``idle`` is
    given); ``faults=[]`` is a healthy plant. With explicit ``faults``, ``idle=None`` means no idle period.
    """
    config = config or PlantConfig()
    if start.tzinfo is None:
        raise ConfigError("start must carry a timezone, e.g. datetime.now(UTC)")
    start = start.astimezone(UTC).replace(microsecond=0)
    if faults is None:
        faults, scheduled_idle = default_schedule(config)
    else:
        faults, scheduled_idle = list(faults), []
    idle = scheduled_idle if idle is None else list(idle)
    for item in (*faults, *drift, *idle):
        if item.asset not in config.assets:
            raise ConfigError(f"{type(item).__name__} on {item.asset!r}, which is not one of {config.assets}")
    for a in config.assets:
        mine = sorted((f for f in faults if f.asset == a), key=lambda f: f.start_s)
        for x, y in itertools.pairwise(mine):
            if y.start_s < x.end_s:
                raise ConfigError(f"faults {x.kind} and {y.kind} on {a} overlap; give each its own time")
    parts = _make_parts(config, faults, drift, idle)
    arrays, shaft, states, elapsed, rates = _signal_arrays(config, faults, drift, idle, config.seed, config.duration_s)
    signals = _signal_messages(config, start.timestamp(), arrays, shaft, states, elapsed, rates)
    return PlantSimulation(config, start, tuple(faults), tuple(drift), tuple(idle), parts, tuple(signals))


# ---------------------------------------------------------------------------------------------- training data
def training_spc(config: PlantConfig, n: int, *, start: datetime = DEFAULT_START) -> _SpcTable:
    """``n`` known-good parts spread evenly over the assets, from the plant's own generator (another seed)."""
    if n < len(config.assets):
        raise ConfigError(f"n={n} must give every one of the {len(config.assets)} assets a part")
    per_asset = -(-n // len(config.assets))
    cfg = replace(config, duration_s=per_asset * config.part_interval_s, seed=config.seed + 1_000)
    p = _make_parts(cfg, (), (), ())
    keep = np.arange(len(p.t)) < n
    t0 = np.datetime64(start.astimezone(UTC).replace(tzinfo=None), "us")
    ts = t0 + (p.t[keep] * 1e6).astype("timedelta64[us]")
    return _SpcTable(X=p.X[keep], asset_id=p.asset[keep], part_id=p.part_id[keep], ts=ts,
                     fault=np.full(int(keep.sum()), "none", dtype=object))


def training_frames(config: PlantConfig, n: int, sku: str | None = None) -> np.ndarray:
    """``n`` known-good images of ``sku`` (default: the first asset's) as the plant's camera sees them."""
    sku = sku or config.sku_of(config.assets[0])
    if sku not in config.skus:
        raise ConfigError(f"sku {sku!r} is not made in this plant ({', '.join(config.skus)})")
    return np.stack([_render_part(sku, config.frame_size, [config.seed + 1_000, 29, i], "", 1.0, 1.0)
                     for i in range(n)])


def training_signals(config: PlantConfig, duration_s: float, *, start: datetime = DEFAULT_START,
                     snapshot_interval_s: float | None = None) -> list[tuple[SignalMeta, np.ndarray]]:
    """Known-good windows of every asset over ``duration_s`` plant seconds (healthy, running, another seed).

    ``snapshot_interval_s`` (default the plant's) spaces the training snapshots further apart: rows
    then carry more independent information each (the load and thermal state move over minutes),
    so fewer of them calibrate a model, while each window is drawn exactly as the plant draws it.
    """
    if snapshot_interval_s is not None:
        config = replace(config, snapshot_interval_s=snapshot_interval_s)
    arrays, shaft, states, elapsed, rates = _signal_arrays(config, (), (), (), config.seed + 1_000, duration_s)
    t0 = start.astimezone(UTC).replace(microsecond=0).timestamp()
    return _signal_messages(config, t0, arrays, shaft, states, elapsed, rates)

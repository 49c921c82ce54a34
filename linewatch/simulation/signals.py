"""Simulated rotating machines: vibration, motor current and temperature with growing, labelled faults.

What is simulated, and why it looks like this
---------------------------------------------
Condition-monitoring systems take *snapshots*: every ``snapshot_interval_s`` each machine
records ``window_s`` of vibration (10 kHz), motor current (2 kHz) and temperature (1 Hz).
Each machine is an induction motor driving a load through rolling-element bearings:

- **vibration** (g): shaft harmonics 1x/2x/3x, a 2x line-frequency electromagnetic tone, broadband
  noise; the shaft runs at nominal speed minus load-dependent slip;
- **current** (A): the line frequency at an amplitude that follows load, 5th/7th supply
  harmonics, noise, load steps every few tens of minutes and occasional harmless
  switching spikes (a realistic source of false alarms, *not* labelled as faults);
- **temperature** (°C): ambient daily cycle, heating that follows load through a first-order
  lag (tens of minutes), slow sensor drift, noise.

Normal behaviour already switches regimes (load steps every ~30 min move current, slip and
temperature together) and is autocorrelated (the thermal lag). ``condition_wander`` adds what
a real machine also does between overhauls: its vibration level wanders slowly (mount
stiffness, lubrication, temperature of the structure) as a stationary AR(1) process with a
:data:`WANDER_CORRELATION_S` correlation time and this relative standard deviation. It is
normal behaviour, never labelled, and off by default; the calibration tests turn it on.

Faults (:data:`FAULT_KINDS`) start at ``onset_s`` and grow as ``severity = max_severity *
min(1, (t - onset) / growth_s)²`` - slowly at first, then faster, like real bearing wear:

- ``outer_race``: impacts at BPFO ring the bearing's structural resonance (a decaying
  sinusoid, kilohertz) - visible in kurtosis, crest factor, high bands and the envelope at BPFO;
- ``inner_race``: impacts at BPFI, amplitude-modulated by the shaft rotation as the defect passes
  through the load zone (envelope at BPFI with 1x sidebands);
- ``imbalance``: a growing 1x component;
- ``looseness``: many shaft harmonics and half-harmonics plus a clipped, asymmetric response;
- ``overheating``: temperature rises beyond what load and ambient explain (cooling failure).

Every fault also leaves the small current sidebands at line ± shaft frequency that motor
current signature analysis looks for, and bearing faults warm the machine a little.
Ground truth per snapshot: fault kind, severity (0 before onset) and onset time.

Everything is numpy-vectorised over windows and samples (the loop is over machines and
chunks of windows only) and seeded: the same arguments give bit-identical arrays.

>>> sim = simulate_signals(n_machines=1, duration_s=600.0, snapshot_interval_s=60.0,
...                        vibration_rate=2000.0, current_rate=1000.0,
...                        faults=[Fault(machine=0, kind="outer_race", onset_s=300.0, growth_s=200.0)],
...                        seed=0)
>>> sim.vibration.shape, sim.current.shape, sim.temperature.shape
((1, 10, 2000), (1, 10, 1000), (1, 10, 1))
>>> sim.labels[0].astype(int).tolist()
[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
>>> str(sim.fault_kind[0, -1]), round(float(sim.severity[0, -1]), 2)
('outer_race', 1.0)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import lfilter

from linewatch.errors import ConfigError
from linewatch.schemas.messages import SignalMeta
from linewatch.signals.features import DEFAULT_BEARING, BearingGeometry
from linewatch.signals.windows import SensorWindow, as_signal_messages
from linewatch.simulation.noise import ar1

FAULT_KINDS: tuple[str, ...] = ("outer_race", "inner_race", "imbalance", "looseness", "overheating")
SENSORS: tuple[str, ...] = ("vibration", "current", "temperature")
#: 2026-01-01T00:00:00Z: simulated time starts here so windows carry realistic epoch timestamps.
DEFAULT_START = 1_767_225_600.0
NOMINAL_SHAFT_HZ = 24.75  # a 4-pole 50 Hz motor (1485 rpm)
LINE_HZ = 50.0
SLIP_AT_FULL_LOAD = 0.02
RESONANCE_HZ = 3000.0  # structural resonance excited by bearing impacts
RESONANCE_DECAY_S = 0.0006
# Amplitudes (g) of the healthy machine and of each fault at full severity.
A_NOISE, A_1X, A_2X, A_3X, A_EM = 0.05, 0.10, 0.04, 0.015, 0.02
A_OUTER, A_INNER, A_IMBALANCE, A_LOOSE = 1.2, 0.9, 0.5, 0.25
# Current (A rms at full load), harmonics share, and sideband share per unit severity.
I_NO_LOAD, I_FULL_LOAD, I_HARMONIC, I_NOISE, I_SIDEBAND = 4.0, 12.0, 0.03, 0.05, 0.03
SPIKE_PROBABILITY, SPIKE_FACTOR, SPIKE_DECAY_S = 0.02, 3.0, 0.03
# Temperature (°C).
T_AMBIENT, T_AMBIENT_SWING, T_RISE_FULL_LOAD, T_LAG_S, T_NOISE = 24.0, 4.0, 30.0, 1200.0, 0.15
T_DRIFT_PER_DAY, T_OVERHEAT, T_BEARING_HEAT = 0.3, 20.0, 5.0
LOAD_STEP_MEAN_S = 1800.0
#: Windows generated per chunk: bounds memory for long runs (10 kHz x 1 s x 128 x 8 B = 10 MB per array).
CHUNK_WINDOWS = 128
#: Correlation time of the slow vibration-level wander (``condition_wander``).
WANDER_CORRELATION_S = 1800.0


@dataclass(frozen=True)
class Fault:
    """One labelled fault on one machine; severity grows quadratically to ``max_severity`` in ``growth_s``."""

    machine: int
    kind: str
    onset_s: float
    growth_s: float
    max_severity: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind {self.kind!r} is not one of {FAULT_KINDS}")
        if self.growth_s <= 0 or not 0 < self.max_severity <= 10:
            raise ConfigError("growth_s must be > 0 and max_severity in (0, 10]")

    def severity(self, t: np.ndarray) -> np.ndarray:
        """Severity at simulated times ``t`` (seconds since the simulation start)."""
        ramp = np.clip((t - self.onset_s) / self.growth_s, 0.0, 1.0)
        return self.max_severity * ramp**2 * (t >= self.onset_s)


@dataclass(frozen=True)
class SignalSimulation:
    """Snapshots of every machine with ground truth; arrays are ``(n_machines, n_windows, ...)``."""

    machines: tuple[str, ...]
    starts: np.ndarray  # (n_windows,) POSIX seconds
    vibration: np.ndarray  # float32 (m, w, vibration samples)
    current: np.ndarray  # float32 (m, w, current samples)
    temperature: np.ndarray  # float32 (m, w, temperature samples)
    shaft_hz: np.ndarray  # (m, w) tachometer reading per snapshot
    load: np.ndarray  # (m, w) in [0, 1]
    spikes: np.ndarray  # (m, w) bool: a harmless switching spike is in the current window
    fault_kind: np.ndarray  # (m, w) str, "" when healthy
    severity: np.ndarray  # (m, w) in [0, max_severity]
    faults: tuple[Fault, ...]
    rates: dict[str, float]
    bearing: BearingGeometry
    start: float

    @property
    def labels(self) -> np.ndarray:
        """Ground truth per snapshot: a fault is present (from its onset on, however small)."""
        return self.severity > 0

    @property
    def elapsed(self) -> np.ndarray:
        """Snapshot start times in seconds since the simulation start."""
        return self.starts - self.start

    def sensor_windows(self, machine: int | None = None) -> Iterator[SensorWindow]:
        """The snapshots as ``signals``-topic windows, in time order (machines interleaved)."""
        machines = range(len(self.machines)) if machine is None else [machine]
        for w, t0 in enumerate(self.starts.tolist()):
            for m in machines:
                for s in SENSORS:
                    arr = getattr(self, s)[m, w]
                    yield SensorWindow(self.machines[m], s, t0, self.rates[s], arr)

    def signal_messages(self, *, known_good_only: bool = False) -> list[tuple[SignalMeta, np.ndarray]]:
        """The simulation as ``signals`` messages (headers and samples): the simulator's own adapter.

        ``known_good_only`` keeps the healthy snapshots only (no fault, however small): what a
        model may be trained on.
        """
        healthy = ~self.labels
        windows = (w for w in self.sensor_windows()
                   if not known_good_only
                   or healthy[self.machines.index(w.asset_id), int(np.searchsorted(self.starts, w.start))])
        return as_signal_messages(windows)


def _load_profile(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Piecewise-constant load with exponentially distributed step times, values in [0.35, 1.0]."""
    horizon = float(t[-1]) + 1.0
    n_steps = int(horizon / LOAD_STEP_MEAN_S * 3) + 4
    step_times = np.cumsum(rng.exponential(LOAD_STEP_MEAN_S, n_steps))
    levels = rng.uniform(0.35, 1.0, n_steps + 1)
    return levels[np.searchsorted(step_times, t, side="right")]


def _impacts(t: np.ndarray, rate_hz: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Decaying resonance ringing once per period ``1/rate_hz``; ``t`` (w, n), rate/phase (w, 1)."""
    period = 1.0 / rate_hz
    tau = np.mod(t + phase * period, period)
    return np.exp(-tau / RESONANCE_DECAY_S) * np.sin(2 * np.pi * RESONANCE_HZ * tau)


def _vibration_chunk(
    rng: np.random.Generator,
    t: np.ndarray,
    shaft: np.ndarray,
    sev: np.ndarray,
    kind: np.ndarray,
    bearing: BearingGeometry,
) -> np.ndarray:
    """Vibration windows ``(w, n)``: the healthy machine plus each window's fault at its severity."""
    w = t.shape[0]
    theta = 2 * np.pi * shaft * t + rng.uniform(0, 2 * np.pi, (w, 1))
    x = A_1X * np.sin(theta) + A_2X * np.sin(2 * theta + 0.4) + A_3X * np.sin(3 * theta + 1.1)
    x += A_EM * np.sin(2 * np.pi * 2 * LINE_HZ * t + rng.uniform(0, 2 * np.pi, (w, 1)))
    x += A_NOISE * rng.standard_normal(t.shape)

    def severity_of(k: str) -> np.ndarray:
        return np.where(kind == k, sev, 0.0)[:, None]

    s = severity_of("outer_race")
    if s.any():
        f = bearing.defect_frequencies(shaft[:, 0])[:, 0:1]
        jitter = 1 + 0.1 * rng.standard_normal(t.shape)  # impact strength varies from ball to ball
        x += s * A_OUTER * _impacts(t, f, rng.uniform(0, 1, (w, 1))) * jitter
    s = severity_of("inner_race")
    if s.any():
        f = bearing.defect_frequencies(shaft[:, 0])[:, 1:2]
        zone = 0.5 * (1 + np.cos(theta))  # the defect passes through the load zone once per turn
        x += s * A_INNER * zone * _impacts(t, f, rng.uniform(0, 1, (w, 1)))
    s = severity_of("imbalance")
    if s.any():
        x += s * A_IMBALANCE * np.sin(theta + 0.3)
    s = severity_of("looseness")
    if s.any():
        for k in range(2, 9):
            x += s * (A_LOOSE / k) * np.sin(k * theta + k)
        for h in (0.5, 1.5, 2.5):
            x += s * 0.5 * A_LOOSE * np.sin(h * theta)
        # Looseness makes the response asymmetric: the structure hits a stop in one direction.
        x = np.where(x > 0, x, x * (1 - 0.5 * np.clip(s, 0, 1)))
    return x


def _current_chunk(
    rng: np.random.Generator,
    t: np.ndarray,
    load: np.ndarray,
    shaft: np.ndarray,
    sev: np.ndarray,
    spikes: np.ndarray,
) -> np.ndarray:
    w = t.shape[0]
    amp = np.sqrt(2) * (I_NO_LOAD + (I_FULL_LOAD - I_NO_LOAD) * load)[:, None]
    phi = 2 * np.pi * LINE_HZ * t + rng.uniform(0, 2 * np.pi, (w, 1))
    i = amp * (np.sin(phi) + I_HARMONIC * np.sin(5 * phi + 0.2) + 0.5 * I_HARMONIC * np.sin(7 * phi + 0.9))
    side = I_SIDEBAND * sev[:, None] * amp
    i += side * (np.sin(phi + 2 * np.pi * shaft * t) + np.sin(phi - 2 * np.pi * shaft * t))
    i += I_NOISE * amp * rng.standard_normal(t.shape)
    if spikes.any():
        at = rng.uniform(0.05, 0.8, (w, 1)) * (t[:, -1:] - t[:, :1]) + t[:, :1]
        dt = t - at
        bump = (SPIKE_FACTOR - 1) * np.exp(-np.clip(dt, 0, None) / SPIKE_DECAY_S) * (dt >= 0)
        i *= 1 + bump * spikes[:, None]
    return i


def _wander(rng: np.random.Generator, n: int, interval_s: float, sd: float) -> np.ndarray:
    """Multiplicative level ``1 + AR(1)`` per snapshot (all ones when ``sd`` is 0)."""
    if sd == 0.0:
        return np.ones(n)
    x = ar1(rng.standard_normal(n), float(np.exp(-interval_s / WANDER_CORRELATION_S)))
    return np.clip(1.0 + sd * x, 0.2, None)


def default_faults(n_machines: int, duration_s: float, rng: np.random.Generator) -> list[Fault]:
    """One fault per machine, kinds in :data:`FAULT_KINDS` order, onset in the middle of the run."""
    return [
        Fault(
            machine=m,
            kind=FAULT_KINDS[m % len(FAULT_KINDS)],
            onset_s=float(duration_s * rng.uniform(0.4, 0.6)),
            growth_s=0.3 * duration_s,
        )
        for m in range(n_machines)
    ]


def simulate_signals(
    *,
    n_machines: int = 5,
    duration_s: float = 12 * 3600.0,
    snapshot_interval_s: float = 60.0,
    window_s: float = 1.0,
    vibration_rate: float = 10_000.0,
    current_rate: float = 2_000.0,
    temperature_rate: float = 1.0,
    faults: Sequence[Fault] | None = None,
    bearing: BearingGeometry = DEFAULT_BEARING,
    start: float = DEFAULT_START,
    seed: int = 0,
    condition_wander: float = 0.0,
) -> SignalSimulation:
    """Simulate ``n_machines`` for ``duration_s``; ``faults=None`` gives each machine one fault
    (:func:`default_faults`), ``faults=[]`` a healthy fleet; ``condition_wander`` (e.g. 0.15) makes
    the vibration level wander slowly (module docstring)."""
    if not 0.0 <= condition_wander < 0.5:
        raise ConfigError(f"condition_wander={condition_wander!r} must be in [0, 0.5), e.g. 0.15")
    if n_machines < 1 or duration_s <= 0 or snapshot_interval_s <= 0 or window_s <= 0:
        raise ConfigError("n_machines, duration_s, snapshot_interval_s and window_s must be positive")
    if window_s > snapshot_interval_s:
        raise ConfigError(f"window_s={window_s} is longer than snapshot_interval_s={snapshot_interval_s}")
    n_samples = {
        "vibration": round(window_s * vibration_rate),
        "current": round(window_s * current_rate),
        "temperature": max(1, round(window_s * temperature_rate)),
    }
    rates = {"vibration": vibration_rate, "current": current_rate, "temperature": temperature_rate}
    if n_samples["vibration"] < 64 or n_samples["current"] < 16:
        raise ConfigError(
            "windows need at least 64 vibration and 16 current samples; raise the rates or window_s"
        )
    root = np.random.SeedSequence(seed)
    rng_plan = np.random.default_rng(root.spawn(1)[0])
    fault_list = list(default_faults(n_machines, duration_s, rng_plan) if faults is None else faults)
    for f in fault_list:
        if not 0 <= f.machine < n_machines:
            raise ConfigError(f"fault on machine {f.machine} but only {n_machines} machines are simulated")
    elapsed = np.arange(0.0, duration_s, snapshot_interval_s)
    n_win = elapsed.size
    shape = (n_machines, n_win)
    sims = {s: np.empty((*shape, n), dtype=np.float32) for s, n in n_samples.items()}
    shaft_hz, load = np.empty(shape), np.empty(shape)
    spikes = np.zeros(shape, dtype=bool)
    kind_arr = np.full(shape, "", dtype=object)
    severity = np.zeros(shape)
    for m, child in enumerate(root.spawn(n_machines + 1)[1:]):
        rng = np.random.default_rng(child)
        ld = _load_profile(rng, elapsed)
        sp = NOMINAL_SHAFT_HZ * (1 - SLIP_AT_FULL_LOAD * ld) * (1 + 0.001 * rng.standard_normal(n_win))
        mine = [f for f in fault_list if f.machine == m]
        sev = np.zeros(n_win)
        kind = np.full(n_win, "", dtype=object)
        for f in mine:  # later faults on the same machine take over where they are stronger
            s = f.severity(elapsed)
            stronger = s > sev
            kind[stronger & (s > 0)] = f.kind
            sev = np.maximum(sev, s)
        spk = rng.random(n_win) < SPIKE_PROBABILITY
        # Temperature: lagged load heating + ambient day cycle + slow drift + faults.
        a = np.exp(-snapshot_interval_s / T_LAG_S)
        heat = lfilter([1 - a], [1, -a], ld, zi=[a * ld[0]])[0]
        day = (elapsed + start) % 86400.0
        ambient = T_AMBIENT + T_AMBIENT_SWING * np.sin(2 * np.pi * (day - 9 * 3600) / 86400.0)
        drift = T_DRIFT_PER_DAY * rng.uniform(-1, 1) * elapsed / 86400.0
        extra = np.where(kind == "overheating", T_OVERHEAT, np.where(kind == "", 0.0, T_BEARING_HEAT)) * sev
        base_temp = ambient + T_RISE_FULL_LOAD * heat + drift + extra
        tt = np.arange(n_samples["temperature"]) / temperature_rate
        temp = base_temp[:, None] + T_NOISE * rng.standard_normal((n_win, tt.size))
        level = _wander(np.random.default_rng([seed, m, 7]), n_win, snapshot_interval_s, condition_wander)
        tv = np.arange(n_samples["vibration"]) / vibration_rate
        tc = np.arange(n_samples["current"]) / current_rate
        for lo in range(0, n_win, CHUNK_WINDOWS):
            hi = min(lo + CHUNK_WINDOWS, n_win)
            sl = slice(lo, hi)
            t_v = np.broadcast_to(tv, (hi - lo, tv.size))
            vib = _vibration_chunk(rng, t_v, sp[sl, None], sev[sl], kind[sl], bearing)
            sims["vibration"][m, sl] = vib * level[sl, None]
            t_c = np.broadcast_to(tc, (hi - lo, tc.size))
            sims["current"][m, sl] = _current_chunk(rng, t_c, ld[sl], sp[sl, None], sev[sl], spk[sl])
        sims["temperature"][m] = temp
        shaft_hz[m], load[m], spikes[m], kind_arr[m], severity[m] = sp, ld, spk, kind, sev
    return SignalSimulation(
        machines=tuple(f"machine-{m + 1:02d}" for m in range(n_machines)),
        starts=start + elapsed,
        vibration=sims["vibration"],
        current=sims["current"],
        temperature=sims["temperature"],
        shaft_hz=shaft_hz,
        load=load,
        spikes=spikes,
        fault_kind=kind_arr.astype(str),
        severity=severity,
        faults=tuple(fault_list),
        rates=rates,
        bearing=bearing,
        start=start,
    )



#: File types :func:`write_recording_dataset` writes (the ones ``linewatch backtest signals`` reads).
RECORDING_FORMATS: tuple[str, ...] = ("npy", "wav", "csv")
#: Recording sensors: vibration and motor current, sampled at one rate as a data collector would.
RECORDING_SENSORS: tuple[str, ...] = ("vibration", "current")
#: Time between two recordings: long enough that the load steps (every ~30 min) vary across them.
RECORDING_INTERVAL_S = 600.0


def _write_recording(path: Path, samples: np.ndarray, rate: float, fmt: str, sensors: Sequence[str]) -> None:
    """One ``(n, sensors)`` float32 recording as NPY, float WAV (one channel per sensor) or CSV."""
    if fmt == "npy":
        np.save(path, samples)
    elif fmt == "wav":
        from scipy.io import wavfile

        wavfile.write(path, round(rate), samples)
    else:
        np.savetxt(path, samples, delimiter=",", header=",".join(sensors), comments="", fmt="%.6g")


def write_recording_dataset(
    root: str | Path,
    *,
    n_train: int = 40,
    n_test_good: int = 20,
    conditions: Sequence[str] = ("outer_race", "inner_race"),
    n_test_per_condition: int = 10,
    seconds: float = 4.0,
    rate: float = 10_000.0,
    severity: float = 1.0,
    fmt: str = "npy",
    sensors: Sequence[str] = RECORDING_SENSORS,
    seed: int = 0,
) -> dict[str, Any]:
    """Waveform recordings of one simulated machine in the images' layout, for ``linewatch backtest signals``.

    Each recording is one snapshot of ``seconds`` of vibration and current at ``rate`` Hz, taken
    :data:`RECORDING_INTERVAL_S` apart (so the load moves between recordings); a condition's recordings
    carry that fault at ``severity`` from the first sample. ``sensors`` picks channels of
    :data:`RECORDING_SENSORS` (in that order). Returns a summary.
    """
    sensors = [s for s in RECORDING_SENSORS if s in sensors]
    if not sensors:
        raise ConfigError(f"sensors must name at least one of {RECORDING_SENSORS}")
    if fmt not in RECORDING_FORMATS:
        raise ConfigError(f"fmt={fmt!r}; use one of {', '.join(RECORDING_FORMATS)}")
    for c in conditions:
        if c not in FAULT_KINDS:
            raise ConfigError(f"condition {c!r} is not one of {FAULT_KINDS}")
    root = Path(root)
    interval = max(RECORDING_INTERVAL_S, seconds)
    # The good recordings are one machine's consecutive snapshots (train first, then test, as a
    # time split would cut them); each condition is another machine with that fault throughout.
    runs: list[tuple[list[tuple[str, str]], Sequence[Fault]]] = [
        ([("train", "good")] * n_train + [("test", "good")] * n_test_good, ())]
    runs += [([("test", c)] * n_test_per_condition, (Fault(0, c, onset_s=-interval, growth_s=1.0,
                                                           max_severity=severity),)) for c in conditions]
    counts: dict[str, int] = {}
    for i, (targets, faults) in enumerate(runs):
        for split, label in {*targets, ("test", "good"), ("train", "good")}:
            (root / split / label).mkdir(parents=True, exist_ok=True)
        if not targets:
            continue
        sim = simulate_signals(n_machines=1, duration_s=len(targets) * interval, snapshot_interval_s=interval,
                               window_s=seconds, vibration_rate=rate, current_rate=rate, faults=faults,
                               seed=seed * 1000 + i)
        for w, (split, label) in enumerate(targets):
            samples = np.column_stack([getattr(sim, c)[0, w] for c in sensors]).astype(np.float32)
            k = counts.get(f"{split}/{label}", 0)
            _write_recording(root / split / label / f"{k:04d}.{fmt}", samples, rate, fmt, sensors)
            counts[f"{split}/{label}"] = k + 1
    return {"root": str(root), "rate": rate, "seconds": seconds, "format": fmt, "counts": counts,
            "sensors": sensors, "shaft_hz": NOMINAL_SHAFT_HZ}

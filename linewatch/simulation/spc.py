"""A simulated machining line producing parts with correlated characteristics and labelled faults.

Each asset makes parts whose six characteristics are correlated the way real ones are
(a bore's diameter and the mating shaft's runout move together; torque follows hardness).
Faults arrive in episodes, each with ground truth on every part it touches:

- ``mean_shift``: one characteristic drifts off centre (tool wear, a fixture knocked);
- ``variance_growth``: one characteristic's spread grows (a loose spindle, worn bearings);
- ``correlation_break``: two characteristics that normally move together stop doing so
  while each one stays perfectly normal on its own. No univariate chart can see it; only a
  multivariate model can. This is the fault that makes multivariate SPC worth having.

Normal behaviour need not be i.i.d., because a real line's is not. Two knobs make it plant-like:

- ``autocorrelation``: each asset's characteristics follow a stationary AR(1) process with this
  lag-1 correlation (thermal state, tool condition and fixture seating carry over from one part
  to the next); the marginal distribution stays exactly the i.i.d. one.
- ``regime_shift_sigma``: each asset moves between :data:`N_REGIMES` normal operating regimes
  (material lots, tool changes) whose centres sit this many sigmas apart in a seeded random
  direction, staying a geometric ``regime_dwell`` parts on average in each. The regime is
  recorded per part (``lot``); it is normal variation, never labelled a fault.

Both default to off (the i.i.d. process every detector's textbook assumes); the calibration
tests and benchmarks turn them on, because that is where a threshold set on in-sample or
interleaved data breaks its false-alarm promise.

Everything is vectorised and seeded, so a test, the demo and a benchmark see the same parts.

>>> sim = simulate_spc(n_parts=200, seed=1, fault_fraction=0.0)
>>> sim.X.shape, sim.feature_names[0], bool((sim.fault == "none").all())
((200, 6), 'bore_diameter_mm', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from linewatch.errors import ConfigError
from linewatch.schemas.messages import SpcRecord, SpecLimit
from linewatch.simulation.noise import ar1

FEATURES: tuple[str, ...] = (
    "bore_diameter_mm",
    "shaft_runout_um",
    "length_mm",
    "surface_roughness_um",
    "hardness_hrc",
    "torque_nm",
)
NOMINAL = np.array([25.000, 12.0, 120.00, 0.80, 58.0, 45.0])
SIGMA = np.array([0.004, 1.5, 0.02, 0.06, 0.8, 1.2])
#: Correlation of the normal process (positive definite; checked in the tests).
CORRELATION = np.array(
    [
        [1.00, 0.90, 0.10, 0.00, 0.05, 0.10],
        [0.90, 1.00, 0.05, 0.05, 0.05, 0.10],
        [0.10, 0.05, 1.00, 0.20, 0.00, 0.00],
        [0.00, 0.05, 0.20, 1.00, -0.30, 0.10],
        [0.05, 0.05, 0.00, -0.30, 1.00, 0.85],
        [0.10, 0.10, 0.00, 0.10, 0.85, 1.00],
    ]
)
#: Spec limits at ±4.5 sigma around nominal: a capable process (Cpk 1.5) when in control.
SPEC_WIDTH_SIGMA = 4.5

FAULT_TYPES: tuple[str, ...] = ("mean_shift", "variance_growth", "correlation_break")
#: Size of each fault, in units of the characteristic's sigma (or a spread factor).
MEAN_SHIFT_SIGMA = 3.0
VARIANCE_FACTOR = 3.0
#: Normal operating regimes (lots) per asset when regime switching is on.
N_REGIMES = 3
#: Mean parts an asset stays in one regime.
DEFAULT_REGIME_DWELL = 300


@dataclass(frozen=True)
class SpcSimulation:
    """Parts in production order with their ground truth."""

    X: np.ndarray  # (n, d) measured values
    asset_id: np.ndarray  # (n,) str
    part_id: np.ndarray  # (n,) str
    ts: np.ndarray  # (n,) datetime64[us], UTC
    fault: np.ndarray  # (n,) str: "none" or one of FAULT_TYPES
    feature_names: tuple[str, ...] = FEATURES
    lot: np.ndarray | None = None  # (n,) int: the normal regime each part was made in

    def __len__(self) -> int:
        return len(self.X)

    def limits(self) -> dict[str, SpecLimit]:
        half = SPEC_WIDTH_SIGMA * SIGMA
        return {
            name: SpecLimit(lsl=float(n - h), usl=float(n + h), target=float(n))
            for name, n, h in zip(self.feature_names, NOMINAL, half, strict=True)
        }

    def event_ids(self) -> list[str]:
        """The ``event_id`` each part's record will carry, without building the records."""
        from linewatch.schemas.ids import event_id

        ts = self.ts.astype("datetime64[us]").astype(datetime)
        return [str(event_id("spc", str(a), str(p), t.replace(tzinfo=UTC).isoformat()))
                for a, p, t in zip(self.asset_id, self.part_id, ts, strict=True)]

    def records(self, *, with_limits: bool = True, sku: str = "housing-a") -> list[SpcRecord]:
        """The parts as ``spc`` topic messages."""
        limits = self.limits() if with_limits else {}
        names = self.feature_names
        ts = self.ts.astype("datetime64[us]").astype(datetime)
        return [
            SpcRecord(
                asset_id=str(self.asset_id[i]),
                sku=sku,
                part_id=str(self.part_id[i]),
                ts=ts[i].replace(tzinfo=UTC),
                values=dict(zip(names, map(float, self.X[i]), strict=True)),
                limits=limits,
                shift=_shift_of(ts[i]),
            )
            for i in range(len(self))
        ]


def _shift_of(t: datetime) -> str:
    return ("night", "early", "late")[t.hour // 8]


def simulate_spc(
    *,
    n_parts: int,
    assets: tuple[str, ...] = ("press-1", "press-2", "press-3"),
    seed: int = 0,
    fault_fraction: float = 0.15,
    episode_length: int = 40,
    start: datetime | None = None,
    interval: timedelta = timedelta(seconds=1),
    fault_types: tuple[str, ...] = FAULT_TYPES,
    autocorrelation: float = 0.0,
    regime_shift_sigma: float = 0.0,
    regime_dwell: int = DEFAULT_REGIME_DWELL,
) -> SpcSimulation:
    """``n_parts`` parts spread over ``assets``, about ``fault_fraction`` of them inside fault episodes.

    ``autocorrelation`` and ``regime_shift_sigma`` make normal behaviour plant-like (module docstring).
    """
    if not 0.0 <= autocorrelation < 1.0:
        raise ConfigError(f"autocorrelation={autocorrelation!r} must be in [0, 1), e.g. 0.6")
    if regime_shift_sigma < 0 or regime_dwell < 1:
        raise ConfigError("regime_shift_sigma must be >= 0 and regime_dwell >= 1 part")
    rng = np.random.default_rng(seed)
    d = len(FEATURES)
    chol = np.linalg.cholesky(CORRELATION)
    z = rng.standard_normal((n_parts, d)) @ chol.T
    fault = np.full(n_parts, "none", dtype=object)
    asset_idx = rng.integers(0, len(assets), n_parts)
    lot = np.zeros(n_parts, dtype=np.int64)
    if autocorrelation > 0 or regime_shift_sigma > 0:
        # Drawn from a child stream so the i.i.d. defaults keep their exact parts.
        extra = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        for a in range(len(assets)):
            rows = np.flatnonzero(asset_idx == a)
            if rows.size == 0:
                continue
            z[rows] = ar1(z[rows], autocorrelation)
            if regime_shift_sigma > 0:
                lot[rows], offset = _regimes(rows.size, regime_shift_sigma, regime_dwell, chol, extra)
                z[rows] += offset

    n_episodes = round(fault_fraction * n_parts / episode_length) if fault_fraction > 0 else 0
    if n_episodes:
        # Episodes never overlap: pick start slots on a grid of episode-sized blocks.
        n_slots = n_parts // episode_length
        slots = rng.choice(np.arange(1, n_slots), size=min(n_episodes, n_slots - 1), replace=False)
        for k, slot in enumerate(np.sort(slots)):
            kind = fault_types[k % len(fault_types)]
            rows = np.arange(slot * episode_length, (slot + 1) * episode_length)
            # One asset at a time goes wrong; its parts inside the episode carry the label.
            culprit = rng.integers(0, len(assets))
            rows = rows[asset_idx[rows] == culprit]
            fault[rows] = kind
            z[rows] = _inject(kind, z[rows], rng)

    X = NOMINAL + z * SIGMA
    t0 = np.datetime64((start or datetime(2026, 1, 5, 6, 0, tzinfo=UTC)).replace(tzinfo=None), "us")
    ts = t0 + (np.arange(n_parts) * int(interval / timedelta(microseconds=1))).astype("timedelta64[us]")
    asset = np.asarray(assets, dtype=object)[asset_idx]
    part = np.char.add("P", np.char.zfill(np.arange(n_parts).astype(str), 8)).astype(object)
    part = np.char.add(asset.astype(str), np.char.add("-", part.astype(str))).astype(object)
    return SpcSimulation(X=X, asset_id=asset, part_id=part, ts=ts, fault=fault, lot=lot)


def _regimes(
    n: int, shift_sigma: float, dwell: int, chol: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Regime index per part and its centre offset: a Markov chain with geometric dwell times.

    Offsets follow the process correlation (a lot moves correlated characteristics together) and
    are scaled to ``shift_sigma`` in Mahalanobis distance from the overall centre.
    """
    g = rng.standard_normal((N_REGIMES, chol.shape[0]))
    centres = shift_sigma * (g / np.linalg.norm(g, axis=1, keepdims=True)) @ chol.T  # |L^-1 c| = shift
    centres -= centres.mean(axis=0)  # the regimes average out to the nominal process
    switches = rng.random(n) < 1.0 / dwell
    steps = rng.integers(1, N_REGIMES, n) * switches  # a switch always goes to another regime
    state = (rng.integers(0, N_REGIMES) + np.cumsum(steps)) % N_REGIMES
    return state, centres[state]


def _inject(kind: str, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    z = z.copy()
    if kind == "mean_shift":
        z[:, 2] += MEAN_SHIFT_SIGMA
    elif kind == "variance_growth":
        z[:, 3] *= VARIANCE_FACTOR
    elif kind == "correlation_break":
        # Runout stops following the bore and mirrors it instead: -0.9 z0 + N(0, 0.19) keeps its
        # marginal exactly N(0, 1), so every univariate chart stays quiet, but the pair now sits
        # far off the +0.9-correlation ellipse.
        z[:, 1] = -0.9 * z[:, 0] + rng.normal(0.0, np.sqrt(1 - 0.9**2), len(z))
    else:
        raise ValueError(f"unknown fault type {kind!r}; use one of {FAULT_TYPES}")
    return z

"""Score a batch of raw ``signals`` messages: decode, featurise, align per asset, score, build rows.

This is the signals agent's whole job except I/O, so the live agent, tests and benchmarks
run exactly this code. Per batch it returns the rows to persist (one ``signal_features`` row
per window, ``scores`` rows per scored frame, dead letters) and the ``scores`` messages to
publish; nothing here touches Kafka or the database.

Steps (the window -> row steps are :mod:`linewatch.signals.framing`'s, shared with training):

1. decode every envelope (:func:`~linewatch.schemas.codec.decode_signal`); a bad one becomes a
   dead letter with the reason and the batch goes on;
2. features and the quality gate for all windows at once, grouped by length and rate
   (:func:`~linewatch.signals.framing.featurize_windows`);
3. each window joins its asset's :class:`~linewatch.signals.framing.FrameBuilder`; for every
   model of the asset (``ModelSource.models_for("signals", asset, "default")``), the slots the batch
   completed become frames (the aligned-slot rule is documented there);
4. frames are scored per asset and model in slot order, carrying the asset's detector state:
   online detectors (``update``) through their per-asset copy, lagged detectors
   (``dynamic_pca``) with the asset's last ``lags`` rows as history (restarted after a gap of
   more than ``history_gap_s``);
5. an asset with a sensor the quality gate rejects gets no anomaly flag: the frame is not
   shown to the detector (an online model must not learn a broken sensor, nor a lagged one
   carry it into the next rows), scores neutral (raw 0, tail probability 1) with
   ``is_anomaly=false, ready=false``, and the explanation and ``top_feature`` say
   ``data quality: <sensor> <reasons>``; a frame whose sensors never all came is reported the
   same way with ``data quality: <sensor> missing``, and a frame of a model that needs bearing
   envelope features whose vibration window came without a shaft speed with
   ``unscored: <sensor>: no shaft speed ...`` (speeds: ``SignalMeta.speed_hz``, else the
   ``asset_speed_hz`` setting, :class:`~linewatch.signals.framing.BearingEnvelope`).

Score ``event_id`` = UUIDv5 of (asset, slot start): a replayed or redelivered frame lands once.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.detectors.base import Explainer, as_batch, load_state, save_state
from linewatch.detectors.bundle import BundleScores, ModelBundle
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError
from linewatch.schemas.codec import decode_signal
from linewatch.schemas.event_time import EventTimeWindow
from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import Modality, SignalMeta
from linewatch.schemas.score_encoder import Defect, EventRef, Explanation, explanation
from linewatch.schemas.signal_rows import SignalFeatureRow
from linewatch.signals.framing import (
    DEFAULT_RETENTION_S,
    DEFAULT_SLOT_S,
    BearingEnvelope,
    FrameBuilder,
    SignalFrame,
    WindowFeatures,
    featurize_windows,
    frame_columns,
)
from linewatch.signals.quality import QualityGate
from linewatch.storage.model_registry import is_shadow
from linewatch.streams.batch import BatchResult, ModelSource
from linewatch.streams.messages import RawMessage

if TYPE_CHECKING:
    from linewatch.defects.stream import DefectLayer

#: Signals carry no SKU; models are looked up for this one (a model registered for any SKU matches).
SIGNALS_SKU = "default"
#: Lagged rows older than this are not the "previous rows" of a new frame: after such a gap a lagged
#: detector restarts its warm-up. An hour covers snapshot intervals of up to ~20 minutes with lags=2.
DEFAULT_HISTORY_GAP_S = 3600.0
_STATE_KIND = "signals_state"

StreamKey = tuple[str, str, str]  # (asset, detector, model version)


class SignalsState:
    """Everything the signals agent remembers between batches, keyed by asset; owned by the agent.

    - ``frames``: recent window features per asset and sensor, and each model's progress
      (:class:`~linewatch.signals.framing.FrameBuilder`);
    - each asset's own copy of every online detector (keyed by asset, detector, model version:
      a new version starts fresh);
    - each asset's last rows for lagged detectors.

    ``save(path)`` / ``SignalsState.load(path)`` write and restore all of it (JSON + npz, the
    detectors through their own ``save``/``load``). The quality gate is configuration and is
    passed in again on load, and so are the shaft speeds (``envelope``).
    """

    def __init__(
        self,
        *,
        slot_s: float = DEFAULT_SLOT_S,
        retention_s: float = DEFAULT_RETENTION_S,
        history_gap_s: float = DEFAULT_HISTORY_GAP_S,
        gate: QualityGate | None = None,
        envelope: BearingEnvelope | None = None,
    ) -> None:
        self.frames = FrameBuilder(slot_s=slot_s, retention_s=retention_s)
        self.history_gap_s = float(history_gap_s)
        self.gate = gate or QualityGate()
        self.envelope = envelope or BearingEnvelope()
        self.streams: dict[StreamKey, Any] = {}
        self.history: dict[StreamKey, tuple[float, np.ndarray]] = {}  # last row time, last rows

    @staticmethod
    def key(asset: str, bundle: ModelBundle) -> StreamKey:
        return (asset, bundle.detector_name, role_version(bundle))

    def stream(self, asset: str, bundle: ModelBundle) -> Any:
        k = self.key(asset, bundle)
        if k not in self.streams:
            copy = bundle.new_stream()
            threshold = getattr(bundle.calibrator, "threshold_", None)
            if hasattr(copy, "set_threshold") and threshold is not None:
                # Online models must not learn what the calibrated threshold flags (as in the backtest).
                copy.set_threshold(threshold)
            self.streams[k] = copy
        return self.streams[k]

    def score(self, asset: str, bundle: ModelBundle, X: np.ndarray, times: np.ndarray
              ) -> tuple[BundleScores, np.ndarray]:
        """Scores of an asset's ordered frame rows ``X`` (slot start ``times``) and which are ready."""
        n = X.shape[0]
        det = bundle.detector
        if bundle.stateful:
            copy = self.stream(asset, bundle)
            if hasattr(copy, "update_explain") or not (isinstance(copy, Explainer) and hasattr(copy, "learn_one")):
                ready = bool(getattr(copy, "ready", True))
                return bundle.score_stream(X, copy), np.full(n, ready)
            # Online models such as online_residual offer update() without contributions:
            # run its score-then-learn loop here so every row also says which feature moved.
            X = as_batch(X, n_features=len(bundle.feature_names))
            raw, contrib, ready_rows = np.empty(n), np.empty_like(X), np.empty(n, dtype=bool)
            for i in range(n):
                row = X[i : i + 1]
                ready_rows[i] = bool(getattr(copy, "ready", True))
                raw[i] = copy.score(row)[0]
                contrib[i] = copy.explain(row)[0]
                copy.learn_one(row[0])
            return bundle.calibrate(raw, contrib), ready_rows
        lags = int(getattr(det, "lags", 0) or 0)
        if lags and hasattr(det, "ready_mask"):
            return self._score_lagged(asset, bundle, as_batch(X, n_features=len(bundle.feature_names)), times, lags)
        return bundle.score(X), np.ones(n, dtype=bool)

    def _score_lagged(self, asset: str, bundle: ModelBundle, X: np.ndarray, times: np.ndarray, lags: int
                      ) -> tuple[BundleScores, np.ndarray]:
        """Consecutive-row detectors: continue from the asset's last rows; restart after a long gap."""
        det = bundle.detector
        k = self.key(asset, bundle)
        breaks = np.flatnonzero(np.diff(times) > self.history_gap_s) + 1
        raws, contribs, readies = [], [], []
        for run in np.split(np.arange(X.shape[0]), breaks):
            last_t, hist = self.history.get(k, (-math.inf, np.empty((0, X.shape[1]))))
            if times[run[0]] - last_t > self.history_gap_s:
                hist = np.empty((0, X.shape[1]))
            Xr = X[run]
            raws.append(det.score(Xr, history=hist))
            if isinstance(det, Explainer):
                contribs.append(det.explain(Xr, history=hist))
            readies.append(det.ready_mask(len(run), n_history=hist.shape[0]))
            self.history[k] = (float(times[run[-1]]), np.vstack([hist, Xr])[-lags:])
        contributions = np.vstack(contribs) if contribs else None
        return bundle.calibrate(np.concatenate(raws), contributions), np.concatenate(readies)

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the frame builder, every per-asset detector copy and the lagged rows under ``path``."""
        root = Path(path)
        self.frames.save(root / "frames")
        streams, history, arrays = [], [], {}
        for i, ((asset, det, version), copy) in enumerate(sorted(self.streams.items(), key=lambda kv: kv[0])):
            copy.save(root / "streams" / str(i))
            streams.append([asset, det, version, str(i)])
        for i, ((asset, det, version), (t, rows)) in enumerate(sorted(self.history.items(), key=lambda kv: kv[0])):
            arrays[f"h{i}"] = rows
            history.append([asset, det, version, t, f"h{i}"])
        params = {"history_gap_s": self.history_gap_s, "streams": streams, "history": history}
        save_state(root, kind=_STATE_KIND, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path, *, gate: QualityGate | None = None,
             envelope: BearingEnvelope | None = None) -> SignalsState:
        """Restore what :meth:`save` wrote; the next batch continues as if there had been no restart."""
        root = Path(path)
        params, arrays = load_state(root, kind=_STATE_KIND)
        frames = FrameBuilder.load(root / "frames")
        state = cls(slot_s=frames.slot_s, retention_s=frames.retention_s,
                    history_gap_s=params["history_gap_s"], gate=gate, envelope=envelope)
        state.frames = frames
        for asset, det, version, sub in params["streams"]:
            state.streams[(asset, det, version)] = get_detector(det).load(root / "streams" / sub)
        for asset, det, version, t, key in params["history"]:
            state.history[(asset, det, version)] = (float(t), arrays[key])
        return state


def role_version(bundle: ModelBundle) -> str:
    """The version, marked when it is a shadow's: a champion and a shadow never share state, even under one version.

    >>> from linewatch.detectors.bundle import ModelBundle
    >>> role_version(ModelBundle(None, None, meta={"version": "v1", "shadow": True}))
    'v1 (shadow)'
    """
    return bundle.version + (" (shadow)" if is_shadow(bundle) else "")


def score_signals_batch(messages: list[RawMessage], models: ModelSource,
                        state: SignalsState | None = None, *, event_window: EventTimeWindow | None = None,
                        defects: DefectLayer | None = None) -> BatchResult:
    """Everything the agent must persist and publish for one batch of raw ``signals`` messages.

    Windows starting outside ``event_window`` (default :class:`EventTimeWindow`) are dead letters.
    With ``defects``, the asset's defect classifier names each frame's class on its scores (from the
    frame's features, when the model's frame holds every feature the classifier reads).
    """
    state = state if state is not None else SignalsState()
    window, now = event_window or EventTimeWindow(), datetime.now(UTC)
    out = BatchResult()
    feature_rows = out.tables[SignalFeatureRow]
    decoded: list[tuple[RawMessage, SignalMeta, np.ndarray]] = []
    for msg in messages:
        try:
            meta, samples = decode_signal(msg.value)
            if (late := window.violation(meta.start, now)) is not None:
                raise DataError(late)
        except DataError as e:
            out.deadletters.add(msg, e)
            continue
        decoded.append((msg, meta, samples))
    features = featurize_windows([(meta, samples) for _, meta, samples in decoded], state.gate,
                                 envelope=state.envelope)
    slots: dict[str, set[int]] = {}
    per_asset: dict[str, int] = defaultdict(int)
    for (msg, meta, _), wf in zip(decoded, features, strict=True):
        if isinstance(wf, DataError):
            out.deadletters.add(msg, wf)
            continue
        feature_rows.append(feature_row(wf))
        out.counts["windows"] += 1
        out.counts["samples"] += meta.n_samples
        per_asset[meta.asset_id] += 1
        slots.setdefault(meta.asset_id, set()).update(state.frames.add(wf))
    scored_at = datetime.now(UTC)
    for asset in sorted(slots):
        bundles = models.models_for(Modality.SIGNALS, asset, SIGNALS_SKU)
        if not bundles:
            out.add_unscored(asset, per_asset[asset])
        for bundle in bundles:
            try:
                columns = frame_columns(bundle.feature_names)
            except ConfigError as e:
                out.problems.append(f"model {bundle.detector_name}@{bundle.version}: {e}")
                continue
            key = f"{bundle.detector_name}@{role_version(bundle)}"
            frames, problems = state.frames.take(asset, key, columns, slots[asset])
            out.problems += problems
            if frames:
                _score_frames(out, state, bundle, asset, frames, scored_at, defects)
        state.frames.prune(asset)
    return out


def feature_row(w: WindowFeatures) -> tuple:
    """A ``signal_features`` row tuple in :class:`SignalFeatureRow` field order."""
    m = w.meta
    values = w.values.tolist()
    by_name = dict(zip(w.names, values, strict=True))
    dominant = by_name.get("peak1_hz")
    return (
        m.start, w.event_id, m.asset_id, m.sensor, m.kind, m.unit, m.sample_rate_hz, m.n_samples,
        by_name["mean"], by_name["rms"], by_name["peak"], by_name["crest_factor"], by_name["kurtosis"],
        by_name["skewness"], by_name.get("spectral_centroid"),
        dominant if dominant else None,  # 0 = the spectrum has no line at all (a flat window)
        json.dumps(by_name), w.reasons,
    )


def _quality_notes(frame: SignalFrame) -> list[dict[str, float | str]]:
    """``Contribution``-shaped entries naming the bad and missing sensors (value and share 0: not a score)."""
    notes = [f"data quality: {s} {','.join(r)}" for s, r in frame.bad.items()]
    notes += [f"data quality: {s} missing" for s in frame.missing]
    notes += [f"unscored: {reason}" for reason in frame.unscored]
    return [{"name": n, "value": 0.0, "share": 0.0} for n in notes]


def _classify(defects: DefectLayer, bundle: ModelBundle, asset: str, frames: list[SignalFrame],
              done: list[int]) -> list[Defect | None] | None:
    """The asset's classifier on the usable frames, read from the model's frame columns (None: it cannot)."""
    clf = defects.classifier_for(Modality.SIGNALS, asset, SIGNALS_SKU)
    names = list(bundle.feature_names)
    if clf is None or not done or not set(clf.feature_names) <= set(names):
        return None
    pick = [names.index(f) for f in clf.feature_names]
    X = np.vstack([frames[i].values for i in done])[:, pick]
    out: list[Defect | None] = [None] * len(frames)
    for i, d in zip(done, defects.classify(clf, X, modality=Modality.SIGNALS, sku=SIGNALS_SKU), strict=True):
        out[i] = d
    return out


def _score_frames(out: BatchResult, state: SignalsState, bundle: ModelBundle, asset: str,
                  frames: list[SignalFrame], scored_at: datetime, defects: DefectLayer | None = None) -> None:
    """Score rows and ``scores`` messages for one asset's frames of one model, in slot order."""
    n = len(frames)
    raw, tail, cal = np.zeros(n), np.ones(n), np.zeros(n)
    flags, ready = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    expl: list[Explanation] = [[] for _ in range(n)]
    # Only clean, complete frames reach the detector: an online model must not learn from a broken
    # sensor, nor a lagged one carry it into the next rows. The others score neutral (raw 0, tail 1).
    done = [i for i, f in enumerate(frames) if f.usable]
    if done:
        X = np.vstack([frames[i].values for i in done])
        times = np.array([frames[i].slot * state.frames.slot_s for i in done])
        r, rdy = state.score(asset, bundle, X, times)
        raw[done], tail[done], cal[done] = r.raw, r.tail_probability, r.calibrated
        flags[done], ready[done] = r.is_anomaly, rdy
        if r.contributions is not None:
            for i, e in zip(done, explanation(r.contributions, r.feature_names), strict=True):
                expl[i] = e
    usable = np.array([f.usable for f in frames], dtype=bool)
    ready &= usable
    out.counts["frames"] += sum(f.values is not None for f in frames)
    out.counts["suppressed"] += int(n - usable.sum())
    events = [EventRef(event_id("signal_frame", asset, f.ts.isoformat()), asset, SIGNALS_SKU, None, f.ts,
                       f.machine_state) for f in frames]
    classes = _classify(defects, bundle, asset, frames, done) if defects is not None else None
    out.add_scores(Modality.SIGNALS, bundle, events, raw=raw, tail=tail, calibrated=cal, is_anomaly=flags & ready,
                   ready=ready, explanations=[_quality_notes(f) + expl[i] for i, f in enumerate(frames)],
                   scored_at=scored_at, defects=classes)

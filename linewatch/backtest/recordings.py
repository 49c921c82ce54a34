"""Backtest a signals model on waveform recordings: how an engineer evaluates it on *their* machine.

Why: before a model watches a machine, its maintenance engineer wants to know, on their own
recordings, how many faulty ones it finds and how often it would cry wolf on good ones.
``linewatch backtest signals`` calls :func:`run_recordings_backtest`; ``linewatch bench
recordings`` and ``linewatch train signals --data`` (:func:`fit_recordings_model`) too. The
folder layout, the file types and how recordings become the live agent's model rows are
:mod:`linewatch.signals.recordings`'. The model is :func:`linewatch.training.fit_model`, i.e.
``ModelBundle.fit`` with its own calibration, on ``train/good`` only.

Scoring follows the agent: lagged detectors (dynamic PCA) score each recording as one sequence
(its first ``lags`` windows warm up and are not evaluated), online detectors run a fresh stream
copy per recording, and a frame a sensor of which fails the quality gate (clipping, flat line, ...)
is never shown to the detector (the agent suppresses it): it is not evaluated, like a warm-up
window, and counted per condition in ``n_quality_flagged`` (with a line in ``warnings``).

Figures (window level unless named ``recording_*``; ``auroc_level`` says so in the JSON):
``auroc`` (good test windows vs every fault window, on the calibrated score), ``far`` (share of
good test windows alarmed, next to ``target_far``), ``recall`` (share of fault windows alarmed),
precision / f1 from :func:`~linewatch.backtest.metrics.classification_metrics`, and per
condition its window AUROC against the good windows, window recall and ``recording_recall``
(recordings with at least one alarmed window); ``recording_auroc`` ranks recordings by their
highest window score, ``recording_far`` is the share of good test recordings with any alarm.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.backtest.metrics import auroc, classification_metrics
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError
from linewatch.signals.framing import TrainingFrames, frame_columns
from linewatch.signals.recordings import (
    DEFAULT_KIND,
    DEFAULT_WINDOW_S,
    GOOD,
    Progress,
    Recording,
    load_recordings,
    recording_frames,
    scan_recordings,
)

#: A backtest on tens of recordings cannot place a 0.1 % threshold; 1 % of good windows can.
DEFAULT_TARGET_FAR = 0.01
#: Test recordings featurized per call: bounds memory and paces the progress bar.
FEATURE_CHUNK_RECORDINGS = 32


def fit_recordings_model(recs: Sequence[Recording], *, window_s: float, detector: str, target_far: float,
                         kind: str = DEFAULT_KIND, speed_hz: float | None = None, seed: int = 0,
                         meta: dict[str, Any] | None = None, **fit: Any) -> tuple[ModelBundle, TrainingFrames]:
    """A calibrated signals bundle fitted on the good recordings (``training.fit_model``, the one path)."""
    from linewatch.training import fit_model

    frames, _ = recording_frames(recs, window_s=window_s, kind=kind, speed_hz=speed_hz)
    info = {"recordings": len(recs), "window_s": window_s, "sample_rate_hz": recs[0].sample_rate,
            "speed_hz": speed_hz, "kind": kind, "skipped_quality": frames.skipped_quality, **(meta or {})}
    bundle = fit_model(frames.X, modality="signals", detector=detector, feature_names=frames.feature_names,
                       target_far=target_far, seed=seed, meta=info, **fit)
    return bundle, frames


# ---------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class RowScores:
    """Per model row: calibrated score (-log10 tail probability), alarm, and whether it is evaluated."""

    calibrated: np.ndarray
    alarm: np.ndarray
    ready: np.ndarray


def score_recording_rows(bundle: ModelBundle, X: np.ndarray, index: np.ndarray, flagged: np.ndarray) -> RowScores:
    """Score rows recording by recording as the agent would; flagged rows are neutral (score 0, no alarm)."""
    n = X.shape[0]
    cal, alarm, ready = np.zeros(n), np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    det = bundle.detector
    lags = int(getattr(det, "lags", 0) or 0)
    for r in np.unique(index):
        rows = np.flatnonzero((index == r) & ~flagged)  # the agent never shows a flagged frame to a detector
        if rows.size == 0:
            continue
        Xr = X[rows]
        if bundle.stateful:
            stream = bundle.new_stream()
            threshold = getattr(bundle.calibrator, "threshold_", None)
            if hasattr(stream, "set_threshold") and threshold is not None:
                stream.set_threshold(threshold)
            s = bundle.score_stream(Xr, stream)
        elif lags and hasattr(det, "ready_mask"):
            kw = {"history": None} if "history" in inspect.signature(det.score).parameters else {}
            s = bundle.calibrate(np.asarray(det.score(Xr, **kw), dtype=np.float64), None)
            ready[rows] = det.ready_mask(rows.size)
        else:
            s = bundle.score(Xr)
        cal[rows], alarm[rows] = s.calibrated, s.is_anomaly
    alarm &= ready
    return RowScores(cal, alarm, ready)


def _summary(cal: np.ndarray, alarm: np.ndarray, index: np.ndarray, n_rec: int) -> tuple[np.ndarray, np.ndarray]:
    """Per recording: the highest evaluated window score and whether any window alarmed."""
    top, hit = np.full(n_rec, -np.inf), np.zeros(n_rec, dtype=bool)
    np.maximum.at(top, index, cal)
    np.logical_or.at(hit, index, alarm)
    return np.where(np.isfinite(top), top, 0.0), hit


def run_recordings_backtest(
    data_dir: str | Path,
    *,
    sample_rate: float,
    window_s: float = DEFAULT_WINDOW_S,
    detector: str = "auto",
    target_far: float = DEFAULT_TARGET_FAR,
    kind: str = DEFAULT_KIND,
    speed_hz: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit on ``train/good``, score ``test/*`` window by window, return the figures of the module docstring."""
    from linewatch.training import DEFAULT_DETECTORS

    detector = DEFAULT_DETECTORS["signals"] if detector == "auto" else detector
    try:
        get_detector(detector)
    except KeyError as e:
        raise ConfigError(f"--detector {detector!r}: {e.args[0]}") from e
    train_files, test_files = scan_recordings(data_dir)
    if not any(c == GOOD for _, c in test_files):
        raise DataError(f"no recordings in {Path(data_dir) / 'test' / GOOD}: the false-alarm rate and the AUROC need "
                        "good recordings the model never saw")
    conditions = sorted({c for _, c in test_files if c != GOOD})
    train = load_recordings([(p, GOOD) for p in train_files], sample_rate=sample_rate, progress=progress,
                            stage="read train")
    test = load_recordings(test_files, sample_rate=sample_rate, progress=progress, stage="read test",
                           sensors=train[0].sensors)
    if progress is not None:
        progress("fit", 0, 1)
    bundle, frames = fit_recordings_model(train, window_s=window_s, detector=detector, target_far=target_far,
                                          kind=kind, speed_hz=speed_hz, seed=seed)
    if progress is not None:
        progress("fit", 1, 1)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for lo in range(0, len(test), FEATURE_CHUNK_RECORDINGS):
        chunk = test[lo : lo + FEATURE_CHUNK_RECORDINGS]
        tf, index = recording_frames(chunk, window_s=window_s, kind=kind, speed_hz=speed_hz,
                                     features=bundle.feature_names, include_flagged=True, first=lo)
        parts.append((tf.X, index, np.asarray(tf.flagged, dtype=bool)))
        if progress is not None:
            progress("scoring", lo + len(chunk), len(test))
    X = np.vstack([p[0] for p in parts])
    index = np.concatenate([p[1] for p in parts])
    flagged = np.concatenate([p[2] for p in parts])
    rs = score_recording_rows(bundle, X, index, flagged)
    cond = np.array([test[i].condition for i in index])
    ev = rs.ready & ~flagged
    y = cond[ev] != GOOD
    out = dict(classification_metrics(y, rs.alarm[ev], rs.calibrated[ev]))
    rec_top, rec_hit = _summary(np.where(ev, rs.calibrated, -np.inf), rs.alarm, index, len(test))
    rec_cond = np.array([r.condition for r in test])
    rec_good = rec_cond == GOOD
    good_w = ev & (cond == GOOD)
    per_condition = {}
    for c in [GOOD, *conditions]:
        w = ev & (cond == c)
        recs = rec_cond == c
        entry: dict[str, Any] = {
            "n_recordings": int(recs.sum()),
            "n_windows": int(w.sum()),
            "n_quality_flagged": int((flagged & (cond == c)).sum()),
            "alarm_rate": float(rs.alarm[w].mean()) if w.any() else None,
            "recording_alarm_rate": float(rec_hit[recs].mean()) if recs.any() else None,
        }
        if c != GOOD:
            both = good_w | w
            entry["auroc"] = auroc(cond[both] == c, rs.calibrated[both])
            entry["recall"] = entry["alarm_rate"]
            entry["recording_recall"] = entry["recording_alarm_rate"]
        per_condition[c] = entry
    warnings = [f"{int((flagged & (cond == c)).sum())} {c} test window(s) failed the quality gate and are not "
                "evaluated (the live agent suppresses them); check the recordings' scaling and clipping"
                for c in [GOOD, *conditions] if (flagged & (cond == c)).any()]
    report = bundle.meta.get("calibration_report")
    out.update({
        "modality": "signals",
        "auroc_level": "window",
        "detector": bundle.detector_name,
        "target_far": target_far,
        "threshold": float(bundle.threshold),
        "n_train": int(frames.X.shape[0]),
        "n_test": int(ev.sum()),
        "n_train_recordings": len(train),
        "n_test_recordings": len(test),
        "n_features": len(bundle.feature_names),
        "n_quality_flagged": int(flagged.sum()),
        "n_warmup_windows": int((~rs.ready).sum()),
        "window_s": window_s,
        "sample_rate_hz": float(sample_rate),
        "speed_hz": speed_hz,
        "envelope_features": any(f.startswith("env_") for _, f in frame_columns(bundle.feature_names)),
        "sensors": list(train[0].sensors),
        "conditions": conditions,
        "per_condition": per_condition,
        "recording_auroc": auroc(~rec_good, rec_top),
        "recording_far": float(rec_hit[rec_good].mean()),
        "recording_recall": float(rec_hit[~rec_good].mean()) if (~rec_good).any() else None,
        "data_dir": str(data_dir),
        "warnings": warnings,
    })
    if report is not None:
        out["calibration_report"] = report
    return out

"""Drift from the real database: the drift table and view, promises, input and score drift, `drift check`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.errors import ConfigError
from linewatch.schemas.drift_rows import DriftRow
from linewatch.schemas.ids import event_id
from linewatch.schemas.rows import ScoreRow, columns
from linewatch.storage.drift import input_drift, load_promises, score_drift, write_drift_rows
from linewatch.storage.model_registry import save_and_register

pytestmark = pytest.mark.integration

CHARS = ("bore", "depth", "flatness")
#: Far from the other tests' event times, so the period holds only this test's rows.
T0 = datetime(2031, 5, 1, tzinfo=UTC)


def test_drift_table_matches_its_row_and_roles(database_url) -> None:
    with psycopg.connect(database_url) as conn:
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'drift'")}
        grants = conn.execute(
            "SELECT has_table_privilege('linewatch_reader', 'drift_latest', 'SELECT'), "
            "has_table_privilege('linewatch_reader', 'drift', 'INSERT'), "
            "has_table_privilege('linewatch_writer', 'drift', 'INSERT'), "
            "has_table_privilege('linewatch_writer', 'drift', 'UPDATE')").fetchone()
    assert set(columns(DriftRow)) == cols
    assert grants == (True, False, True, False)


def _parts(rng: np.random.Generator, n: int, *, bore_offset: float = 0.0) -> np.ndarray:
    X = rng.normal(size=(n, len(CHARS))) * np.array([0.01, 0.02, 0.005]) + np.array([10.0, 5.0, 0.1])
    X[:, 0] += bore_offset
    return X


def _store_period(conn: psycopg.Connection, bundle: ModelBundle, asset: str, X: np.ndarray) -> None:
    """The parts as `spc_measurements` (long format) and their scores as `scores`, one part a minute."""
    out = bundle.score(X)
    measurements, scores = [], []
    for i, row in enumerate(X):
        ts = T0 + timedelta(minutes=i)
        eid = event_id("spc", asset, f"P{i}", ts.isoformat())
        measurements += [(ts, eid, asset, "sku", f"P{i}", None, c, float(v), None, None, None)
                         for c, v in zip(CHARS, row, strict=True)]
        scores.append((ts, eid, "spc", asset, "sku", f"P{i}", bundle.detector_name, bundle.version,
                       float(out.raw[i]), float(out.tail_probability[i]), float(out.calibrated[i]),
                       bundle.threshold, bool(out.is_anomaly[i]), True, None, "[]", None, None, None, None, ts))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, characteristic, "
                        "value, lsl, usl, target) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        measurements)
        cur.executemany(f"INSERT INTO scores ({', '.join(columns(ScoreRow))}) VALUES "
                        f"({', '.join(['%s'] * len(columns(ScoreRow)))})", scores)
    conn.commit()


def test_a_gauge_recalibration_shows_as_input_and_score_drift(database_url, tmp_path) -> None:
    rng = np.random.default_rng(11)
    asset = f"drift-{uuid.uuid4().hex[:6]}"
    bundle = ModelBundle.fit("hotelling", _parts(rng, 1500), feature_names=CHARS, target_far=0.01,
                             scope=Scope(asset), seed=0)
    assert bundle.input_reference is not None and bundle.input_reference.shape == (1500, 3)
    # 600 parts as trained, then the bore gauge is recalibrated: +0.02 mm (2 sd of the bore).
    live = np.vstack([_parts(rng, 600), _parts(rng, 900, bore_offset=0.02)])
    with psycopg.connect(database_url) as conn:
        ref = save_and_register(conn, bundle, model_dir=tmp_path / "models")
        _store_period(conn, bundle, asset, live)

        promises = load_promises(conn, [ref.version, "no-such-version"])
        far, lo, hi = promises[ref.version]
        assert far == pytest.approx(0.01) and lo < far < hi
        assert list(promises) == [ref.version]

        inputs = input_drift(conn, since=T0, assets=[asset], cache_dir=tmp_path / "cache")
        by_feature = {r.feature: r for r in inputs.rows}
        assert set(by_feature) == set(CHARS) and not inputs.skipped
        assert by_feature["bore"].drifted and by_feature["bore"].retrain_recommended
        assert by_feature["bore"].psi > 0.25 and by_feature["bore"].n == 500
        assert not by_feature["depth"].retrain_recommended and not by_feature["flatness"].retrain_recommended
        (rec,) = inputs.recommendations
        assert rec.features == ("bore",) and rec.kind == "input" and rec.asset_id == asset

        scores = score_drift(conn, since=T0, assets=[asset])
        assert len(scores.rows) == 15
        assert not any(r.drifted for r in scores.rows[:5])  # the 500 parts before the recalibration
        assert scores.rows[-1].drifted and scores.rows[-1].retrain_recommended
        assert scores.rows[-1].promised_far_high == pytest.approx(hi)
        assert len(scores.recommendations) == 1

        rows = scores.rows + inputs.rows
        assert write_drift_rows(conn, rows) == len(rows)
        assert write_drift_rows(conn, rows) == 0  # idempotent on the natural key
        latest = conn.execute("SELECT kind, feature, retrain_recommended FROM drift_latest WHERE asset_id = %s "
                              "ORDER BY kind, feature", (asset,)).fetchall()
    assert latest == [("input", "bore", True), ("input", "depth", False), ("input", "flatness", False),
                      ("score", "", True)]


def test_drift_check_cli_writes_rows_and_prints_the_train_command(database_url, tmp_path) -> None:
    rng = np.random.default_rng(12)
    asset = f"driftcli-{uuid.uuid4().hex[:6]}"
    bundle = ModelBundle.fit("pca_monitor", _parts(rng, 1000), feature_names=CHARS, target_far=0.01,
                             scope=Scope(asset), seed=0)
    old = ModelBundle.fit("hotelling", _parts(rng, 1000), feature_names=CHARS, target_far=0.01,
                          scope=Scope(asset), seed=0)
    old.input_reference = None  # a bundle trained before references were kept
    with psycopg.connect(database_url) as conn:
        save_and_register(conn, bundle, model_dir=tmp_path / "models")
        save_and_register(conn, old, model_dir=tmp_path / "models")
        X = _parts(rng, 800, bore_offset=0.03)
        _store_period(conn, bundle, asset, X)
        _store_period(conn, old, asset, X)
    env = {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)}
    out = tmp_path / "drift.json"
    res = CliRunner().invoke(app, ["drift", "check", "--since", T0.isoformat(), "--asset", asset,
                                   "--json", str(out)], env=env)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines at the terminal width
    assert "retrain recommended" in text and f"--asset {asset}" in text
    assert f"input drift skipped for {old.version}" in text and "no input reference" in text
    doc = json.loads(out.read_text())
    assert {r["model_version"] for r in doc["retrain_recommended"]} == {bundle.version, old.version}
    with psycopg.connect(database_url) as conn:
        n = conn.execute("SELECT count(*) FROM drift WHERE asset_id = %s", (asset,)).fetchone()[0]
    assert n == len(doc["rows"]) > 0
    again = CliRunner().invoke(app, ["drift", "check", "--since", T0.isoformat(), "--asset", asset], env=env)
    assert again.exit_code == 0 and "(0 new)" in " ".join(again.output.split())
    bad = CliRunner().invoke(app, ["drift", "check", "--since", "yesterday"], env=env)
    # `linewatch` maps a ConfigError to exit code 2 (cli.common.run); the runner sees the exception itself.
    assert isinstance(bad.exception, ConfigError) and "ISO timestamp" in str(bad.exception)


def test_signal_features_feed_input_drift_per_sensor_feature(database_url, tmp_path) -> None:
    rng = np.random.default_rng(13)
    asset = f"driftsig-{uuid.uuid4().hex[:6]}"
    names = ("temperature.mean", "vibration.kurtosis", "vibration.rms")

    def windows(n: int, gain: float = 1.0) -> np.ndarray:
        return np.column_stack([rng.normal(50.0, 0.5, n), rng.normal(3.0, 0.2, n), rng.normal(0.2, 0.01, n) * gain])

    bundle = ModelBundle.fit("hotelling", windows(1200), feature_names=names, modality="signals",
                             target_far=0.01, scope=Scope(asset), seed=0)
    live = np.vstack([windows(300), windows(700, gain=1.4)])  # the accelerometer's gain is set 40 % high
    out = bundle.score(live)
    features, scores = [], []
    for i, (temp, kurt, rms) in enumerate(live):
        ts = T0 + timedelta(minutes=i)
        for sensor, values, quality in (("temperature", {"mean": temp}, []),
                                        ("vibration", {"kurtosis": kurt, "rms": rms, "peak": 1.0}, [])):
            features.append((ts, event_id("signals", asset, sensor, ts.isoformat()), asset, sensor, sensor, "u",
                             1.0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, json.dumps(values), quality))
        # Windows the quality gate rejected must not count: a stuck thermocouple far off scale.
        features.append((ts + timedelta(seconds=1), event_id("signals", asset, "temperature-bad", ts.isoformat()),
                         asset, "temperature", "temperature", "u", 1.0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None,
                         None, json.dumps({"mean": -999.0}), ["stuck"]))
        scores.append((ts, event_id("signals", asset, ts.isoformat()), "signals", asset, "default", None,
                       bundle.detector_name, bundle.version, float(out.raw[i]), float(out.tail_probability[i]),
                       float(out.calibrated[i]), bundle.threshold, bool(out.is_anomaly[i]), True, None, "[]",
                       None, None, None, None, ts))
    with psycopg.connect(database_url) as conn:
        save_and_register(conn, bundle, model_dir=tmp_path / "models")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO signal_features (ts, event_id, asset_id, sensor, kind, unit, sample_rate_hz, n_samples, "
                "mean, rms, peak, crest_factor, kurtosis, skewness, spectral_centroid_hz, dominant_hz, features, "
                "quality) VALUES (" + ", ".join(["%s"] * 18) + ")", features)
            cur.executemany(f"INSERT INTO scores ({', '.join(columns(ScoreRow))}) VALUES "
                            f"({', '.join(['%s'] * len(columns(ScoreRow)))})", scores)
        conn.commit()
        result = input_drift(conn, since=T0, assets=[asset], cache_dir=tmp_path / "cache")
    by_feature = {r.feature: r for r in result.rows}
    assert set(by_feature) == set(names)
    assert by_feature["vibration.rms"].retrain_recommended and by_feature["vibration.rms"].n == 500
    assert not by_feature["temperature.mean"].drifted and not by_feature["vibration.kurtosis"].drifted
    assert [r.features for r in result.recommendations] == [("vibration.rms",)]

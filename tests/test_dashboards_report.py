"""``linewatch report``: the four views drawn from the dashboards' own queries, as PNGs and one HTML page."""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from linewatch.cli.report import report_cmd
from linewatch.dashboards.queries import QUERIES
from linewatch.dashboards.report import VIEW_TITLES
from linewatch.dashboards.report_data import VIEW_QUERIES, bucket_seconds
from linewatch.errors import ConfigError

VIEWS = ("overview", "asset", "spc", "drift")


def _app() -> typer.Typer:
    """The command as the lead registers it (``linewatch report``), on an app of its own."""
    app = typer.Typer()
    app.command("report")(report_cmd)
    app.command("version")(lambda: None)  # a second command, so typer keeps "report" as a subcommand
    return app


@pytest.fixture
def past_plant(database_url: str) -> Iterator[tuple[str, datetime]]:
    """An hour of one unique asset's rows (scores of every modality, an alert that opens and closes, SPC
    measurements with an outlier, drift checks) at a past hour no other test writes to, removed afterwards."""
    asset = f"rep-{uuid.uuid4().hex[:10]}"
    t0 = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=int(uuid.uuid4().int % 100_000))
    rng = np.random.default_rng(3)
    eids = [uuid.uuid4() for _ in range(60)]
    alert_id = uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, characteristic, "
            "value, lsl, usl, target) VALUES (%s, %s, %s, 'S1', %s, 'A', 'bore', %s, 10.0, 12.0, 11.0)",
            [(t0 + timedelta(minutes=i), eid, asset, f"p{i}", 11.0 + 0.1 * rng.standard_normal()
              + (0.8 if i == 45 else 0.0)) for i, eid in enumerate(eids)])
        cur.executemany(
            "INSERT INTO scores (ts, event_id, modality, asset_id, sku, part_id, detector, model_version, "
            "raw_score, tail_probability, calibrated_score, threshold, is_anomaly, ready, top_feature, "
            "explanation, scored_at) VALUES (%s, %s, %s, %s, 'S1', %s, %s, 'v1', 1, 0.1, %s, 3, %s, true, "
            "'bore', '[]', %s)",
            [(t0 + timedelta(minutes=i), eid, modality, asset, f"p{i}", detector, score, score > 3,
              t0 + timedelta(minutes=i))
             for modality, detector in (("spc", "ewma"), ("signals", "dynamic_pca"), ("frames", "patchcore"))
             for i, eid in enumerate(eids)
             for score in [float(abs(rng.standard_normal()) + (6 if 40 <= i < 50 else 0))]])
        for minute, state in ((40, "open"), (45, "update"), (50, "close")):
            cur.execute(
                "INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities, "
                "contributors, kind, route, shadow) VALUES (%s, %s, %s, %s, 'critical', %s, %s, "
                "'{spc,signals}', %s, 'anomaly', 'quality', false)",
                (t0 + timedelta(minutes=minute), alert_id, state, asset, t0 + timedelta(minutes=40), 5.0 + minute / 10,
                 json.dumps([{"name": "bore", "share": 0.8, "modality": "spc"}])))
        cur.executemany(
            "INSERT INTO drift (ts, asset_id, modality, detector, model_version, kind, feature, n, psi, "
            "ks_statistic, ks_pvalue, alarm_rate, promised_far, promised_far_low, promised_far_high, drifted, "
            "retrain_recommended) VALUES (%s, %s, 'spc', 'ewma', 'v1', %s, %s, 500, %s, 0.2, 0.01, %s, 0.001, "
            "0.0005, 0.002, %s, false)",
            [(t0 + timedelta(minutes=m), asset, kind, feature, psi, rate if kind == "score" else None, psi > 0.25)
             for m, psi, rate in ((15, 0.05, 0.001), (35, 0.2, 0.004), (55, 0.4, 0.05))
             for kind, feature in (("score", ""), ("input", "bore"))])
    yield asset, t0
    with psycopg.connect(database_url) as conn:
        for table in ("scores", "spc_measurements", "drift", "alerts"):
            conn.execute(f"DELETE FROM {table} WHERE asset_id = %s", (asset,))


def _invoke(monkeypatch: pytest.MonkeyPatch, database_url: str, *args: str):
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", database_url)
    return CliRunner().invoke(_app(), ["report", *args])


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _colours(pixels: np.ndarray) -> int:
    """How many distinct colours a picture has (RGB packed into one integer: unique rows are slow)."""
    packed = pixels.astype(np.uint32)
    return len(np.unique((packed[..., 0] << 16) | (packed[..., 1] << 8) | packed[..., 2]))


@pytest.mark.integration
def test_report_draws_the_four_views_from_the_databases_rows(monkeypatch, database_url, past_plant, tmp_path):
    asset, t0 = past_plant
    since, until = (t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (t0 - timedelta(minutes=5), t0 + timedelta(hours=1)))
    result = _invoke(monkeypatch, database_url, "--out", str(tmp_path), "--since", since, "--until", until)
    assert result.exit_code == 0, result.output
    # defaults: the asset with the most alerts in the range (only ours has any then), its first characteristic
    assert f"asset {asset}, characteristic S1 / bore" in result.output.replace("\n", " ")
    for view in VIEWS:
        png = tmp_path / f"report-{view}.png"
        pixels = _pixels(png)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 800, view
        assert _colours(pixels) > 50, f"{view} is (nearly) one colour"
    page = (tmp_path / "report.html").read_text()
    for view, title in VIEW_TITLES.items():
        assert title in page and f'alt="report-{view}.png"' in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and all(Image.open(io.BytesIO(base64.b64decode(i))).format == "PNG" for i in images)
    assert not re.search(r'(src|href)="(?!data:)', page) and "<link" not in page and "<script" not in page
    assert "queried as linewatch_reader" in page
    # the tables come from the same queries: the SPC outlier is a rule violation, the alert an annotation
    assert "Rule violations</h3><table>" in page and "none in range" not in page.split("Rule violations")[1][:60]
    assert "critical anomaly alert" in page


@pytest.mark.integration
def test_an_empty_range_gives_a_page_that_says_so_per_view(monkeypatch, database_url, tmp_path):
    result = _invoke(monkeypatch, database_url, "--out", str(tmp_path), "--since", "1990-01-01T00:00:00Z",
                     "--until", "1990-01-02T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "no data in the range" in result.output
    page = (tmp_path / "report.html").read_text()
    assert "No scores for any asset in range." in page and "No SPC measurements" in page
    assert "No drift checks" in page
    for view in VIEWS:
        assert _colours(_pixels(tmp_path / f"report-{view}.png")) > 2


def test_a_range_that_ends_before_it_starts_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(_app(), ["report", "--out", str(tmp_path), "--since", "2h", "--until", "3h"])
    assert isinstance(result.exception, ConfigError) and "give an earlier --since" in str(result.exception)


def test_every_view_uses_registry_queries_and_buckets_like_grafana():
    assert {k for keys in VIEW_QUERIES.values() for k in keys} <= set(QUERIES)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    assert bucket_seconds(t0, t0 + timedelta(hours=24)) == 600
    assert bucket_seconds(t0, t0 + timedelta(hours=1)) == 15


@pytest.mark.integration
def test_a_login_without_the_grants_is_told_which_login_to_use(monkeypatch, database_url, tmp_path):
    role = f"rep_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        url = re.sub(r"//[^@]+@", f"//{role}:pw@", database_url)
        result = _invoke(monkeypatch, url, "--out", str(tmp_path), "--since", "1h")
        assert isinstance(result.exception, ConfigError), result.output
        assert "permission denied" in str(result.exception) and "SET ROLE linewatch_reader" in str(result.exception)
        assert not (tmp_path / "report.html").exists()
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")

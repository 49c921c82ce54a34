"""What the dashboards' fixture must make every panel find: one list for plain PostgreSQL and TimescaleDB."""

from __future__ import annotations

from collections.abc import Mapping

#: Panels (registry keys) that must return at least one of the fixture's rows.
PANELS_WITH_ROWS = (
    "asset.score.spc", "asset.score.signals", "asset.score.frames", "asset.signal-rms", "asset.signal-quality",
    "asset.spc-z", "asset.frame-heatmaps", "asset.annotation.alerts", "multivariate.calibrated",
    "multivariate.contributions", "multivariate.anomalies", "drift.score-psi", "drift.input-psi", "drift.alarm-rate",
    "drift.latest", "drift.retrain", "overview.fused-heatmap", "overview.open-by-asset", "overview.incidents-table",
    "overview.recognised-defects",
    "pipeline.throughput", "pipeline.sink-latency", "pipeline.deadletters-by-reason", "pipeline.model-versions",
)


def check_fixture_rows(rows: Mapping[str, int], where: str) -> None:
    """Fail with the panel's key when a query found fewer of the fixture's rows than its panel shows."""
    assert rows["spc.individuals"] == 30 and rows["spc.capability-daily"] >= 1
    for key in PANELS_WITH_ROWS:
        assert rows[key] >= 1, f"{key} found none of the fixture's rows {where}"
    assert rows["multivariate.contributions"] == 2  # bore and depth, one bucket
    assert rows["alert rule linewatch-open-incident"] >= 1 and rows["alert rule linewatch-retrain-recommended"] >= 1

"""Every SQL statement the dashboards send to the linewatch datasource, once, with what it must return.

Why a registry: a panel's SQL breaks silently when a view changes, and Grafana only says "no data".
Each :class:`PanelQuery` names the columns (and their kinds) the panel reads, and :func:`check_queries`
runs every one as Grafana's read-only role against a migrated database and compares names *and* types
(from the type OIDs in ``cursor.description``). The dashboard modules look queries up by key, so the SQL
in the JSON and the SQL the tests run are the same string.

TimescaleDB or plain PostgreSQL: the JSON is written once. Fixed-width buckets read the per-minute and
per-hour aggregates (``scores_1m``, ``signal_features_1m``, ``spc_1h``), which are continuous aggregates
on TimescaleDB and plain views otherwise, under the same names and columns. Range-dependent buckets use
Grafana's ``$__timeGroupAlias(col, $__interval)``, which Grafana expands to ``time_bucket(...)`` when the
datasource has its TimescaleDB option on (the provisioned one does) and to an epoch ``floor()`` otherwise.
So ``timescale_sql`` is ``None`` for every query here (the same text runs on both); it exists for a query
that needs a different statement on TimescaleDB, and :meth:`PanelQuery.sql_for` picks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from linewatch.dashboards.datasource import clean_sql

Kind = Literal["time", "number", "text", "json", "bool"]
Flavour = Literal["plain", "timescale"]
T: Kind = "time"
N: Kind = "number"
S: Kind = "text"
J: Kind = "json"
B: Kind = "bool"


@dataclass(frozen=True)
class PanelQuery:
    """One statement Grafana runs: its registry key, its SQL (with Grafana macros), an optional TimescaleDB
    variant, the columns it must return (name -> kind, in order) and the result format the panel asks for."""

    key: str
    sql: str
    timescale_sql: str | None
    columns: dict[str, Kind] = field(hash=False)
    format: Literal["time_series", "table"] = "table"

    def sql_for(self, flavour: Flavour) -> str:
        """The statement for one database flavour (``timescale_sql`` where there is one)."""
        return self.timescale_sql if flavour == "timescale" and self.timescale_sql else self.sql

    @property
    def where(self) -> str:
        """How reports name the query (its registry key)."""
        return self.key


def _q(key: str, sql: str, columns: dict[str, Kind], fmt: Literal["time_series", "table"] = "table",
       timescale_sql: str | None = None) -> PanelQuery:
    if fmt == "time_series" and next(iter(columns)) != "time":
        raise ValueError(f"{key}: a time series query returns 'time' first")
    return PanelQuery(key, clean_sql(sql), clean_sql(timescale_sql) if timescale_sql else None, columns, fmt)


#: Detectors that score several variables jointly (docs/detectors-tabular.md, docs/signals.md).
MULTIVARIATE_DETECTORS: tuple[str, ...] = ("hotelling", "mewma", "pca_monitor", "robust_mahalanobis",
                                           "dynamic_pca")
_MV = "(" + ", ".join(f"'{d}'" for d in MULTIVARIATE_DETECTORS) + ")"
MODALITIES: tuple[str, ...] = ("spc", "signals", "frames")
_SERIES = ("asset_id = ${asset:sqlstring} AND sku = ${sku:sqlstring} "
           "AND characteristic = ${characteristic:sqlstring}")
_CAPABILITY = """round(mean::numeric, 4) AS mean, round(stddev::numeric, 4) AS "s overall",
           round(sigma_within::numeric, 4) AS "s within", lsl, usl,
           round(cp::numeric, 2) AS cp, round(cpk::numeric, 2) AS cpk,
           round(pp::numeric, 2) AS pp, round(ppk::numeric, 2) AS ppk"""
_CAPABILITY_COLUMNS: dict[str, Kind] = {"mean": N, "s overall": N, "s within": N, "lsl": N, "usl": N,
                                        "cp": N, "cpk": N, "pp": N, "ppk": N}
_SHARES = """coalesce((SELECT string_agg((c ->> 'name') || coalesce(' ' || round(100 * (c ->> 'share')::numeric)
                                                              || '%', ''), ', ')
                 FROM (SELECT * FROM jsonb_array_elements({col}) LIMIT 5) AS top (c)), '')"""


#: Tables whose rows say when they were written, with the event time they were written for.
_WRITTEN_TABLES = ("scores", "signal_features", "frame_heatmaps", "alerts")


def _latency(table: str, column: str, label: str) -> str:
    return (f"SELECT $__timeGroupAlias(ts, $__interval), '{label}' AS metric, percentile_cont(0.95) WITHIN GROUP "
            f"(ORDER BY date_part('epoch', {column} - ts)) AS \"p95\" FROM {table} WHERE $__timeFilter(ts) GROUP BY 1")


#: p95 of (written or scored) - event time per table and bucket: how far behind the plant the database is.
_SINK_LATENCY = "\nUNION ALL\n".join(
    [_latency("scores", "scored_at", "scores: scored_at - ts"),
     *(_latency(t, "written_at", f"{t}: written_at - ts") for t in _WRITTEN_TABLES)]) + "\nORDER BY 1"


def _registry() -> list[PanelQuery]:
    q: list[PanelQuery] = []
    # --- plant overview ---------------------------------------------------------------------------
    q += [
        _q("overview.open-alerts", """
            SELECT count(*) AS "open alerts" FROM open_alerts WHERE NOT shadow
        """, {"open alerts": N}),
        _q("overview.critical-open", """
            SELECT count(*) AS "critical" FROM open_alerts WHERE NOT shadow AND max_severity = 'critical'
        """, {"critical": N}),
        _q("overview.incidents", """
            SELECT count(*) AS "incidents" FROM alert_incidents WHERE NOT shadow AND $__timeFilter(opened_at)
        """, {"incidents": N}),
        _q("overview.deadletters", """
            SELECT count(*) AS "dead letters" FROM deadletters WHERE $__timeFilter(received_at)
        """, {"dead letters": N}),
        _q("overview.open-by-asset", """
            SELECT asset_id AS asset,
                   count(*) FILTER (WHERE max_severity = 'critical') AS critical,
                   count(*) FILTER (WHERE max_severity = 'warning') AS warning,
                   count(*) FILTER (WHERE max_severity = 'info') AS info
            FROM open_alerts
            WHERE NOT shadow
            GROUP BY asset_id
            ORDER BY critical DESC, warning DESC, info DESC, asset_id
        """, {"asset": S, "critical": N, "warning": N, "info": N}),
        _q("overview.fused-heatmap", """
            SELECT $__timeGroupAlias(ts, $__interval), asset_id AS metric, max(score) AS "fused score"
            FROM alerts
            WHERE kind = 'anomaly' AND NOT shadow AND $__timeFilter(ts)
            GROUP BY 1, asset_id
            ORDER BY 1
        """, {"time": T, "metric": S, "fused score": N}, "time_series"),
        _q("overview.anomalies-per-minute", """
            SELECT bucket AS "time", asset_id AS metric, sum(n_anomalies) AS anomalies
            FROM scores_1m
            WHERE $__timeFilter(bucket)
            GROUP BY bucket, asset_id
            ORDER BY bucket
        """, {"time": T, "metric": S, "anomalies": N}, "time_series"),
        _q("overview.incidents-table", f"""
            SELECT opened_at AS "opened", asset_id AS asset, kind, route, max_severity AS severity,
                   round(max_score::numeric, 2) AS "max score", last_state AS state,
                   round(date_part('epoch', duration)::numeric) AS "open for (s)",
                   {_SHARES.format(col="last_contributors")} AS contributors,
                   array_to_string(modalities, ', ') AS modalities,
                   coalesce(recognised_class, '') AS "recognised class",
                   coalesce(verdict, '') AS disposition, coalesce(defect_class, '') AS "defect class",
                   coalesce(disposition_operator, '') AS "disposed by", shadow
            FROM alert_incidents
            WHERE $__timeFilter(opened_at)
            ORDER BY opened_at DESC
            LIMIT 100
        """, {"opened": T, "asset": S, "kind": S, "route": S, "severity": S, "max score": N, "state": S,
              "open for (s)": N, "contributors": S, "modalities": S, "recognised class": S, "disposition": S,
              "defect class": S,
              "disposed by": S, "shadow": B}),
        _q("overview.recognised-defects", """
            SELECT sku, defect_class AS "defect class", min(defect_route) AS route, count(*) AS recognised,
                   count(*) FILTER (WHERE NOT anomaly_flagged) AS "not flagged as anomalies",
                   round(avg(defect_confidence)::numeric, 2) AS "mean confidence", max(ts) AS "last seen"
            FROM defect_detections
            WHERE $__timeFilter(ts)
            GROUP BY sku, defect_class
            ORDER BY "not flagged as anomalies" DESC, recognised DESC, sku, defect_class
            LIMIT 100
        """, {"sku": S, "defect class": S, "route": S, "recognised": N, "not flagged as anomalies": N,
              "mean confidence": N, "last seen": T}),
    ]
    # --- asset drill-down ---------------------------------------------------------------------------
    q.append(_q("asset.var.asset", """
        SELECT asset_id FROM scores_1m WHERE $__timeFilter(bucket)
        UNION
        SELECT asset_id FROM signal_features_1m WHERE $__timeFilter(bucket)
        ORDER BY 1
    """, {"asset_id": S}))
    for modality in MODALITIES:
        q.append(_q(f"asset.score.{modality}", f"""
            SELECT $__timeGroupAlias(ts, $__interval), detector AS metric,
                   max(calibrated_score) AS score, max(threshold) AS threshold
            FROM scores
            WHERE asset_id = ${{asset:sqlstring}} AND modality = '{modality}' AND $__timeFilter(ts)
            GROUP BY 1, detector
            ORDER BY 1
        """, {"time": T, "metric": S, "score": N, "threshold": N}, "time_series"))
    q += [
        _q("asset.signal-rms", """
            SELECT bucket AS "time", sensor AS metric, max_rms AS "max rms"
            FROM signal_features_1m
            WHERE asset_id = ${asset:sqlstring} AND $__timeFilter(bucket)
            ORDER BY bucket
        """, {"time": T, "metric": S, "max rms": N}, "time_series"),
        _q("asset.signal-impulsiveness", """
            SELECT bucket AS "time", sensor AS metric, max_crest_factor AS "crest factor",
                   max_kurtosis AS kurtosis
            FROM signal_features_1m
            WHERE asset_id = ${asset:sqlstring} AND $__timeFilter(bucket)
            ORDER BY bucket
        """, {"time": T, "metric": S, "crest factor": N, "kurtosis": N}, "time_series"),
        _q("asset.signal-quality", """
            SELECT bucket AS "time", sensor AS metric, n_quality_issues AS "windows with quality issues"
            FROM signal_features_1m
            WHERE asset_id = ${asset:sqlstring} AND $__timeFilter(bucket) AND n_quality_issues > 0
            ORDER BY bucket
        """, {"time": T, "metric": S, "windows with quality issues": N}, "time_series"),
        _q("asset.spc-z", """
            SELECT ts AS "time", sku || ' / ' || characteristic AS metric, z_score AS z
            FROM spc_individuals_chart
            WHERE asset_id = ${asset:sqlstring} AND $__timeFilter(ts)
            ORDER BY ts
        """, {"time": T, "metric": S, "z": N}, "time_series"),
        _q("asset.frame-heatmaps", """
            SELECT ts AS "time", event_id::text AS "event id", camera, sku, part_id AS part, detector,
                   round((peak_value / threshold)::numeric, 2) AS "peak / threshold",
                   round(area_fraction::numeric, 4) AS "area above threshold",
                   peak_x AS "peak x", peak_y AS "peak y",
                   'data:image/png;base64,' || translate(encode(thumbnail, 'base64'), E'\\n', '') AS "heat map",
                   ((date_part('epoch', ts) * 1000)::bigint - 300000)::text AS from_ms,
                   ((date_part('epoch', ts) * 1000)::bigint + 300000)::text AS to_ms
            FROM frame_heatmaps
            WHERE asset_id = ${asset:sqlstring} AND $__timeFilter(ts)
            ORDER BY ts DESC
            LIMIT 50
        """, {"time": T, "event id": S, "camera": S, "sku": S, "part": S, "detector": S, "peak / threshold": N,
              "area above threshold": N, "peak x": N, "peak y": N, "heat map": S, "from_ms": S, "to_ms": S}),
        _q("asset.annotation.alerts", """
            SELECT opened_at AS "time", coalesce(closed_at, last_ts) AS "timeend",
                   max_severity || ' ' || kind || ' alert, score ' || round(max_score::numeric, 1)
                       || coalesce(', ' || verdict, '') AS text,
                   max_severity || ',' || route AS tags
            FROM alert_incidents
            WHERE asset_id = ${asset:sqlstring} AND NOT shadow AND $__timeFilter(opened_at)
            ORDER BY opened_at
        """, {"time": T, "timeend": T, "text": S, "tags": S}),
    ]
    # --- SPC ----------------------------------------------------------------------------------------
    q += [
        _q("spc.var.asset", """
            SELECT DISTINCT asset_id FROM spc_1h WHERE $__timeFilter(bucket) ORDER BY 1
        """, {"asset_id": S}),
        _q("spc.var.sku", """
            SELECT DISTINCT sku FROM spc_1h
            WHERE asset_id = ${asset:sqlstring} AND $__timeFilter(bucket)
            ORDER BY 1
        """, {"sku": S}),
        _q("spc.var.characteristic", """
            SELECT DISTINCT characteristic FROM spc_1h
            WHERE asset_id = ${asset:sqlstring} AND sku = ${sku:sqlstring} AND $__timeFilter(bucket)
            ORDER BY 1
        """, {"characteristic": S}),
        _q("spc.individuals", f"""
            SELECT ts AS "time", value, center_line AS "centre line", ucl AS "UCL", lcl AS "LCL",
                   lsl AS "LSL", usl AS "USL", CASE WHEN out_of_control THEN value END AS "out of control"
            FROM spc_individuals_chart
            WHERE {_SERIES}
              AND $__timeFilter(ts)
            ORDER BY ts
        """, {"time": T, "value": N, "centre line": N, "UCL": N, "LCL": N, "LSL": N, "USL": N,
              "out of control": N}, "time_series"),
        _q("spc.moving-range", f"""
            SELECT ts AS "time", moving_range AS "moving range", mr_ucl AS "MR UCL"
            FROM spc_individuals_chart
            WHERE {_SERIES}
              AND $__timeFilter(ts)
            ORDER BY ts
        """, {"time": T, "moving range": N, "MR UCL": N}, "time_series"),
        _q("spc.violations", f"""
            SELECT ts AS "time", part_id AS part, value, round(z_score::numeric, 2) AS z,
                   array_to_string(rules_violated, ', ') AS rules, in_baseline AS "phase I"
            FROM spc_individuals_chart
            WHERE {_SERIES}
              AND $__timeFilter(ts)
              AND out_of_control
            ORDER BY ts DESC
            LIMIT 200
        """, {"time": T, "part": S, "value": N, "z": N, "rules": S, "phase I": B}),
        _q("spc.capability-daily", f"""
            SELECT day, n, {_CAPABILITY}
            FROM spc_capability_daily
            WHERE {_SERIES}
              AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date
            ORDER BY day DESC
        """, {"day": T, "n": N, **_CAPABILITY_COLUMNS}),
        _q("spc.capability-shift", f"""
            SELECT day, shift, shift_start AS "start", shift_end AS "end", n, {_CAPABILITY}
            FROM spc_capability_shift
            WHERE {_SERIES}
              AND $__timeFilter(shift_start)
            ORDER BY shift_start DESC
        """, {"day": T, "shift": S, "start": T, "end": T, "n": N, **_CAPABILITY_COLUMNS}),
        _q("spc.latest-cpk", """
            SELECT DISTINCT ON (sku, characteristic) characteristic, sku, day, n,
                   round(cpk::numeric, 2) AS cpk, round(ppk::numeric, 2) AS ppk, lsl, usl
            FROM spc_capability_daily
            WHERE asset_id = ${asset:sqlstring}
              AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date
              AND (lsl IS NOT NULL OR usl IS NOT NULL)
            ORDER BY sku, characteristic, day DESC
        """, {"characteristic": S, "sku": S, "day": T, "n": N, "cpk": N, "ppk": N, "lsl": N, "usl": N}),
    ]
    # --- multivariate anomalies -----------------------------------------------------------------------
    q += [
        _q("multivariate.var.asset", f"""
            SELECT DISTINCT asset_id FROM scores_1m
            WHERE detector IN {_MV} AND $__timeFilter(bucket)
            ORDER BY 1
        """, {"asset_id": S}),
        _q("multivariate.calibrated", f"""
            SELECT $__timeGroupAlias(ts, $__interval), detector AS metric,
                   max(calibrated_score) AS score, max(threshold) AS threshold
            FROM scores
            WHERE asset_id = ${{asset:sqlstring}} AND detector IN {_MV} AND $__timeFilter(ts)
            GROUP BY 1, detector
            ORDER BY 1
        """, {"time": T, "metric": S, "score": N, "threshold": N}, "time_series"),
        _q("multivariate.t2-spe", """
            SELECT $__timeGroupAlias(ts, $__interval), detector AS metric, max(raw_score) AS statistic
            FROM scores
            WHERE asset_id = ${asset:sqlstring} AND detector IN ('hotelling', 'pca_monitor', 'dynamic_pca')
              AND $__timeFilter(ts)
            GROUP BY 1, detector
            ORDER BY 1
        """, {"time": T, "metric": S, "statistic": N}, "time_series"),
        _q("multivariate.distances", """
            SELECT $__timeGroupAlias(ts, $__interval), detector AS metric, max(raw_score) AS statistic
            FROM scores
            WHERE asset_id = ${asset:sqlstring} AND detector IN ('mewma', 'robust_mahalanobis')
              AND $__timeFilter(ts)
            GROUP BY 1, detector
            ORDER BY 1
        """, {"time": T, "metric": S, "statistic": N}, "time_series"),
        _q("multivariate.contributions", """
            SELECT $__timeGroupAlias(s.ts, $__interval), e ->> 'name' AS metric,
                   avg((e ->> 'share')::float8) AS share
            FROM scores s
            CROSS JOIN LATERAL jsonb_array_elements(s.explanation) AS e
            WHERE s.asset_id = ${asset:sqlstring} AND s.detector = ${detector:sqlstring}
              AND $__timeFilter(s.ts)
            GROUP BY 1, e ->> 'name'
            ORDER BY 1
        """, {"time": T, "metric": S, "share": N}, "time_series"),
        _q("multivariate.anomalies", f"""
            SELECT ts AS "time", detector, model_version AS "model version", coalesce(part_id, '') AS part,
                   round(calibrated_score::numeric, 2) AS score, round(threshold::numeric, 2) AS threshold,
                   coalesce(top_feature, '') AS "top variable",
                   {_SHARES.format(col="explanation")} AS contributions
            FROM scores
            WHERE asset_id = ${{asset:sqlstring}} AND detector IN {_MV} AND is_anomaly AND $__timeFilter(ts)
            ORDER BY ts DESC
            LIMIT 100
        """, {"time": T, "detector": S, "model version": S, "part": S, "score": N, "threshold": N,
              "top variable": S, "contributions": S}),
    ]
    # --- drift --------------------------------------------------------------------------------------
    q += [
        _q("drift.var.asset", """
            SELECT DISTINCT asset_id FROM drift WHERE $__timeFilter(ts) ORDER BY 1
        """, {"asset_id": S}),
        _q("drift.score-psi", """
            SELECT ts AS "time", detector || ' ' || model_version AS metric, psi AS "PSI"
            FROM drift
            WHERE asset_id = ${asset:sqlstring} AND kind = 'score' AND $__timeFilter(ts)
            ORDER BY ts
        """, {"time": T, "metric": S, "PSI": N}, "time_series"),
        _q("drift.input-psi", """
            SELECT ts AS "time", detector || ' ' || model_version || ' ' || feature AS metric, psi AS "PSI"
            FROM drift
            WHERE asset_id = ${asset:sqlstring} AND kind = 'input' AND $__timeFilter(ts)
            ORDER BY ts
        """, {"time": T, "metric": S, "PSI": N}, "time_series"),
        _q("drift.alarm-rate", """
            SELECT ts AS "time", detector || ' ' || model_version AS metric, alarm_rate AS "alarm rate",
                   promised_far AS "promised", promised_far_low AS "promise low",
                   promised_far_high AS "promise high"
            FROM drift
            WHERE asset_id = ${asset:sqlstring} AND kind = 'score' AND alarm_rate IS NOT NULL
              AND $__timeFilter(ts)
            ORDER BY ts
        """, {"time": T, "metric": S, "alarm rate": N, "promised": N, "promise low": N, "promise high": N},
            "time_series"),
        _q("drift.latest", """
            SELECT ts AS "checked", detector, model_version AS "model version", kind, feature, n,
                   round(psi::numeric, 3) AS psi, round(ks_statistic::numeric, 3) AS ks, ks_pvalue AS "KS p",
                   page_hinkley AS "PH / ADWIN", drifted, retrain_recommended AS retrain, detail
            FROM drift_latest
            WHERE asset_id = ${asset:sqlstring}
            ORDER BY retrain_recommended DESC, drifted DESC, detector, model_version, kind, feature
        """, {"checked": T, "detector": S, "model version": S, "kind": S, "feature": S, "n": N, "psi": N,
              "ks": N, "KS p": N, "PH / ADWIN": B, "drifted": B, "retrain": B, "detail": S}),
        _q("drift.retrain", """
            SELECT opened_at AS "opened", asset_id AS asset, last_state AS state,
                   array_to_string(model_versions, ', ') AS "model versions", last_note AS note,
                   coalesce(verdict, '') AS disposition, closed_at AS "closed"
            FROM alert_incidents
            WHERE kind = 'retrain_recommended' AND $__timeFilter(opened_at)
            ORDER BY opened_at DESC
            LIMIT 100
        """, {"opened": T, "asset": S, "state": S, "model versions": S, "note": S, "disposition": S,
              "closed": T}),
        _q("drift.champion-challenger", """
            SELECT day, champion_alerts AS "champion alerts", shadow_alerts AS "shadow alerts",
                   round(champion_agreement::numeric, 2) AS "champion agreement",
                   round(shadow_agreement::numeric, 2) AS "shadow agreement",
                   champion_false_alarms AS "champion false alarms",
                   shadow_false_alarms_est AS "shadow false alarms (est.)",
                   champion_true_defects AS "true defects", shadow_missed_defects AS "missed by shadow",
                   champion_missed_defects AS "missed by champion",
                   round(median_delay_s::numeric, 1) AS "shadow delay (s, median)"
            FROM champion_challenger
            WHERE asset_id = ${asset:sqlstring} AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date
            ORDER BY day DESC
        """, {"day": T, "champion alerts": N, "shadow alerts": N, "champion agreement": N,
              "shadow agreement": N, "champion false alarms": N, "shadow false alarms (est.)": N,
              "true defects": N, "missed by shadow": N, "missed by champion": N, "shadow delay (s, median)": N}),
    ]
    # --- pipeline health ----------------------------------------------------------------------------
    q += [
        _q("pipeline.seconds-since-score", """
            SELECT date_part('epoch', now() - max(written_at)) AS "seconds since the last score"
            FROM scores
            WHERE $__timeFilter(ts)
        """, {"seconds since the last score": N}),
        _q("pipeline.active-models", """
            SELECT count(*) FILTER (WHERE active AND NOT shadow) AS champions,
                   count(*) FILTER (WHERE active AND shadow) AS shadows
            FROM model_versions
        """, {"champions": N, "shadows": N}),
        _q("pipeline.throughput", """
            SELECT bucket AS "time", 'scores' AS metric, sum(n_events)::float8 AS "rows per minute"
            FROM scores_1m WHERE $__timeFilter(bucket) GROUP BY bucket
            UNION ALL
            SELECT bucket, 'signal_features', sum(n_windows)::float8
            FROM signal_features_1m WHERE $__timeFilter(bucket) GROUP BY bucket
            UNION ALL
            SELECT date_trunc('minute', ts), 'spc_measurements', count(*)::float8
            FROM spc_measurements WHERE $__timeFilter(ts) GROUP BY 1
            UNION ALL
            SELECT date_trunc('minute', ts), 'frame_heatmaps', count(*)::float8
            FROM frame_heatmaps WHERE $__timeFilter(ts) GROUP BY 1
            UNION ALL
            SELECT date_trunc('minute', ts), 'alerts', count(*)::float8
            FROM alerts WHERE $__timeFilter(ts) GROUP BY 1
            UNION ALL
            SELECT date_trunc('minute', received_at), 'deadletters', count(*)::float8
            FROM deadletters WHERE $__timeFilter(received_at) GROUP BY 1
            ORDER BY 1
        """, {"time": T, "metric": S, "rows per minute": N}, "time_series"),
        _q("pipeline.deadletters-per-minute", """
            SELECT date_trunc('minute', received_at) AS "time", source_topic || ': ' || error_type AS metric,
                   count(*) AS "dead letters"
            FROM deadletters
            WHERE $__timeFilter(received_at)
            GROUP BY 1, 2
            ORDER BY 1
        """, {"time": T, "metric": S, "dead letters": N}, "time_series"),
        _q("pipeline.deadletters-by-reason", """
            SELECT source_topic AS topic, error_type, count(*) AS n, max(received_at) AS "last seen",
                   (array_agg(reason ORDER BY received_at DESC))[1] AS "latest reason"
            FROM deadletters
            WHERE $__timeFilter(received_at)
            GROUP BY source_topic, error_type
            ORDER BY n DESC
        """, {"topic": S, "error_type": S, "n": N, "last seen": T, "latest reason": S}),
        _q("pipeline.sink-latency", _SINK_LATENCY, {"time": T, "metric": S, "p95": N}, "time_series"),
        _q("pipeline.model-versions", """
            SELECT created_at AS "created", model_id AS "model", version, modality, detector,
                   scope_asset AS asset, scope_sku AS sku, scope_camera AS camera, n_samples AS "training rows",
                   train_start AS "trained from", train_end AS "trained to", active, shadow, provisional
            FROM model_versions
            ORDER BY created_at DESC
            LIMIT 200
        """, {"created": T, "model": S, "version": S, "modality": S, "detector": S, "asset": S, "sku": S,
              "camera": S, "training rows": N, "trained from": T, "trained to": T, "active": B, "shadow": B,
              "provisional": B}),
    ]
    return q


#: THE registry: every panel's, variable's and annotation's SQL, by key.
QUERIES: dict[str, PanelQuery] = {pq.key: pq for pq in _registry()}


# --- Grafana macros -------------------------------------------------------------------------------

_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([^()]+?)\s*\)")
_TIME_GROUP = re.compile(r"\$__timeGroup(Alias)?\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_DURATION = re.compile(r"^'?(\d+)(ms|s|m|h|d)'?$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _interval_text(seconds: float) -> str:
    """``$__interval`` the way Grafana renders it (the largest whole unit)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def expand_macros(sql: str, *, start: datetime, end: datetime, interval_s: float = 60,
                  variables: Mapping[str, str] | None = None, flavour: Flavour = "plain") -> str:
    """Expand the Grafana macros and variables these dashboards use, the way Grafana's PostgreSQL
    datasource does, so a query runs without Grafana.

    ``$__timeFilter(c)`` becomes ``c BETWEEN '<start>' AND '<end>'``; ``$__timeGroupAlias(c, $__interval)``
    becomes ``time_bucket('<n>s',c) AS "time"`` on ``flavour="timescale"`` (the datasource's TimescaleDB
    option) and ``floor(extract(epoch from c)/<n>)*<n> AS "time"`` otherwise; ``${v:sqlstring}`` a quoted,
    escaped literal. Anything else starting with ``$__`` is refused, so a new macro cannot slip past.

    >>> t0, t1 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    >>> expand_macros("x WHERE $__timeFilter(ts) AND a = ${asset:sqlstring}", start=t0, end=t1,
    ...               variables={"asset": "o'k"})
    "x WHERE ts BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-02T00:00:00Z' AND a = 'o''k'"
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    lo, hi = (t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (start, end))

    def time_group(m: re.Match[str]) -> str:
        column, arg = m[2], m[3]
        if arg == "$__interval":
            seconds = float(interval_s)
        elif d := _DURATION.match(arg):
            seconds = int(d[1]) * _UNIT_S[d[2]]
        else:
            raise ValueError(f"unsupported $__timeGroup interval {arg!r} in: {sql}")
        if flavour == "timescale":
            group = f"time_bucket('{seconds:g}s',{column})"
        else:
            group = f"floor(extract(epoch from {column})/{seconds:g})*{seconds:g}"
        return group + (' AS "time"' if m[1] else "")

    out = _TIME_GROUP.sub(time_group, sql)
    out = _TIME_FILTER.sub(lambda m: f"{m[1]} BETWEEN '{lo}' AND '{hi}'", out)
    out = out.replace("$__timeFrom()", f"'{lo}'").replace("$__timeTo()", f"'{hi}'")
    out = out.replace("$__interval", _interval_text(interval_s))
    if "$__" in out:
        raise ValueError(f"unsupported Grafana macro in: {sql}")
    values = dict(variables or {})

    def variable(m: re.Match[str]) -> str:
        name, fmt = m[1] or m[3], m[2]
        if name not in values:
            raise ValueError(f"query uses ${name} but no value was given for it")
        if fmt not in (None, "sqlstring"):
            raise ValueError(f"unsupported variable format {fmt!r} in: {sql}")
        text = values[name]
        return "'" + text.replace("'", "''") + "'" if fmt == "sqlstring" else text

    return _VARIABLE.sub(variable, out)


# --- running them ---------------------------------------------------------------------------------

#: PostgreSQL type OIDs -> the kind of field Grafana makes of them.
KIND_OF_OID: dict[int, Kind] = {
    1184: T, 1114: T, 1082: T,
    20: N, 21: N, 23: N, 26: N, 700: N, 701: N, 1700: N,
    25: S, 1043: S, 19: S, 1042: S, 18: S, 2950: S,
    114: J, 3802: J,
    16: B,
}

#: Values that pick out nothing in particular; enough to plan and run every query.
DEFAULT_VARIABLES: dict[str, str] = {"asset": "__check__", "sku": "__check__", "characteristic": "__check__",
                                     "detector": MULTIVARIATE_DETECTORS[0]}


def expanded_queries(*, flavour: Flavour = "plain", start: datetime, end: datetime, interval_s: float = 60,
                     variables: Mapping[str, str] | None = None,
                     queries: Iterable[PanelQuery] | None = None) -> list[tuple[PanelQuery, str]]:
    """Every registered query with its macros expanded to concrete SQL for one flavour, for a runner that is
    not psycopg (e.g. a TimescaleDB driven from Node): run each statement, map the result's type OIDs with
    :data:`KIND_OF_OID` and compare with :func:`column_problems`."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    return [(q, expand_macros(q.sql_for(flavour), start=start, end=end, interval_s=interval_s, variables=values,
                              flavour=flavour))
            for q in (QUERIES.values() if queries is None else queries)]


@dataclass(frozen=True)
class QueryResult:
    """What running one query gave: column names and kinds, row count, or what went wrong (SQL error or
    columns that differ from the registry)."""

    query: PanelQuery
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    rows: int
    error: str | None


def column_problems(query: PanelQuery, names: tuple[str, ...], kinds: tuple[str, ...],
                    flavour: Flavour) -> str | None:
    """Why the returned columns do not match the registry, or None. A plain-PostgreSQL
    ``$__timeGroupAlias`` gives epoch seconds, which Grafana's SQL datasources read as time."""
    expected = tuple(query.columns)
    if names != expected:
        return f"columns {list(names)} but the panel expects {list(expected)}"
    grouped_epoch = flavour == "plain" and "$__timeGroup" in query.sql_for(flavour)
    wrong = [f"{n}: {k} (expected {query.columns[n]})" for n, k in zip(names, kinds, strict=True)
             if k != query.columns[n] and not (grouped_epoch and n == "time" and k == N)]
    return "wrong column types: " + ", ".join(wrong) if wrong else None

"""``linewatch drift check``: has any model's baseline moved? Score and input drift over a recent period.

It replays the period's scores (``scores``) and inputs (``spc_measurements``, ``signal_features``)
through the drift monitors, writes the ``drift`` rows (idempotent: running it twice adds nothing),
prints what drifted and, for every model version whose drift persisted, a "retrain recommended"
line with the command to run. It never changes a threshold: a moved baseline is a reason to
retrain on recent known-good data. Exit code 0 either way; ``--json`` writes everything for scripts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from linewatch.cli.common import ConfigOption, console, fmt, settings
from linewatch.errors import ConfigError

drift_app = typer.Typer(help="Drift of model scores and inputs against their training reference.",
                        no_args_is_help=True)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: datetime) -> datetime:
    """``1h``, ``30m``, ``7d`` (that long before ``now``) or an ISO timestamp with a timezone.

    >>> now = datetime(2026, 1, 2, tzinfo=UTC)
    >>> parse_since("1h", now).isoformat(), parse_since("2026-01-01T00:00:00Z", now).isoformat()
    ('2026-01-01T23:00:00+00:00', '2026-01-01T00:00:00+00:00')
    """
    m = _DURATION.match(value)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        ts = None
    if ts is None or ts.tzinfo is None:
        raise ConfigError(f"--since {value!r} is neither a duration (30m, 1h, 7d) nor an ISO timestamp with a "
                          "timezone (2026-01-01T08:00:00Z)")
    return ts.astimezone(UTC)


@drift_app.command("check")
def drift_check_cmd(
    config: ConfigOption = None,
    since: Annotated[str, typer.Option(help="period to check: a duration back from now (30m, 1h, 7d) or an "
                                            "ISO timestamp")] = "1h",
    asset: Annotated[list[str] | None, typer.Option(help="only this asset (repeat for several)")] = None,
    window: Annotated[int, typer.Option(help="recent scores or inputs each check compares")] = 500,
    report_every: Annotated[int, typer.Option(help="a drift row every this many scores or inputs")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every row and recommendation "
                                                                 "here as JSON")] = None,
) -> None:
    """Check score and input drift of every model version that scored in the period, and store the rows."""
    import json

    from linewatch.embedded.stack import Stack
    from linewatch.storage.connection import connect
    from linewatch.storage.drift import input_drift, score_drift, write_drift_rows

    start = parse_since(since, datetime.now(UTC))
    s = settings(config)
    with Stack(s, need_broker=False) as stack, connect(stack.database_url) as conn:
        scores = score_drift(conn, since=start, assets=asset, window=window, report_every=report_every)
        inputs = input_drift(conn, since=start, assets=asset, window=window, report_every=report_every)
        rows = scores.rows + inputs.rows
        written = write_drift_rows(conn, rows)
    recommendations = scores.recommendations + inputs.recommendations
    _print(rows, recommendations, inputs.skipped, written, start)
    if json_out is not None:
        doc = {"since": start.isoformat(), "rows": [r.model_dump(mode="json") for r in rows],
               "retrain_recommended": [_rec_json(r) for r in recommendations],
               "skipped": [{"model_version": v, "reason": why} for v, why in inputs.skipped]}
        json_out.write_text(json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}")


def _rec_json(rec: Any) -> dict[str, Any]:
    return {"ts": rec.ts.isoformat(), "asset_id": rec.asset_id, "modality": rec.modality, "detector": rec.detector,
            "model_version": rec.model_version, "kind": rec.kind, "features": list(rec.features),
            "reason": rec.reason, "figures": rec.figures, "train_command": rec.train_command}


def _print(rows: list[Any], recommendations: list[Any], skipped: list[tuple[str, str]], written: int,
           start: datetime) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    latest: dict[tuple[str, ...], Any] = {}
    for r in rows:  # the newest row per asset, version, kind and feature
        key = (r.asset_id, r.detector, r.model_version, r.kind, r.feature)
        if key not in latest or r.ts >= latest[key].ts:
            latest[key] = r
    checked = {(r.asset_id, r.model_version) for r in rows}
    console.print(f"checked {len(checked)} model version x asset pairs since {start.isoformat()}: "
                  f"{len(rows)} drift rows ({written} new)")
    drifted = [r for r in latest.values() if r.drifted or r.retrain_recommended]
    if drifted:
        table = Table(title="drift (latest check per model version, asset and input)")
        for col in ("asset", "model", "kind", "feature", "n", "PSI", "KS p", "alarm rate", "promised", "retrain",
                    "why"):
            table.add_column(col)
        for r in sorted(drifted, key=lambda r: (r.asset_id, r.detector, r.model_version, r.kind, r.feature)):
            promised = (f"{r.promised_far:.2g} [{r.promised_far_low:.2g}, {r.promised_far_high:.2g}]"
                        if r.promised_far is not None else "")
            table.add_row(r.asset_id, f"{r.detector}@{r.model_version}", r.kind, r.feature, str(r.n), fmt(r.psi),
                          f"{r.ks_pvalue:.1e}", fmt(r.alarm_rate) if r.alarm_rate is not None else "", promised,
                          "yes" if r.retrain_recommended else "", r.detail)
        out.print(table)
    else:
        out.print("no drift: every checked model's scores and inputs look like its training data")
    for rec in recommendations:
        out.print(f"[bold yellow]retrain recommended[/]: {rec.modality} {rec.detector}@{rec.model_version} on "
                  f"{rec.asset_id}: {rec.reason}")
        out.print(f"    run: {rec.train_command}")
    for version, why in skipped:
        console.print(f"input drift skipped for {version}: {why}")

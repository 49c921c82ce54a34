"""``linewatch report``: the dashboards' main views as PNG pictures and one HTML page, without Grafana.

Runs the same registry queries the Grafana panels run (:mod:`linewatch.dashboards.report_data`), read-only,
as the reader role where the login may take it, and draws overview, one asset, the SPC chart of one
characteristic and drift (:mod:`linewatch.dashboards.report`). The database is ``LINEWATCH_DATABASE_URL`` (or
the settings file), else the embedded one under the data directory, as for every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, settings
from linewatch.cli.feedback_options import parse_time
from linewatch.errors import ConfigError, InfrastructureError


def report_cmd(
    out: Annotated[Path, typer.Option(help="directory to write report-*.png and report.html into")] = Path("report"),
    since: Annotated[str, typer.Option(
        help="start of the range: a look-back such as 24h, 90m or 7d, or ISO 8601 with a zone "
             "(2026-01-01T06:00:00Z)")] = "24h",
    until: Annotated[str, typer.Option(help="end of the range: 'now', a look-back or ISO 8601 with a zone")] = "now",
    asset: Annotated[str | None, typer.Option(
        help="asset for the asset, SPC and drift views (default: the one with the most alerts in the range)")]
    = None,
    characteristic: Annotated[str | None, typer.Option(
        help="SPC characteristic of that asset (default: its first one in the range)")] = None,
    config: ConfigOption = None,
) -> None:
    """Render overview, asset, SPC chart and drift to PNG and one self-contained HTML page.

    For a shift report, an e-mail or the docs when no Grafana is at hand; the pictures come from the
    dashboards' own SQL, so they show what the panels would.
    """
    import time
    from datetime import UTC, datetime

    import psycopg

    from linewatch.dashboards.report import write_report
    from linewatch.dashboards.report_data import fetch_report
    from linewatch.embedded.stack import Stack

    start = parse_time(since, "--since")
    end = datetime.now(UTC) if until.strip().lower() == "now" else parse_time(until, "--until")
    assert start is not None and end is not None  # parse_time keeps None only for None
    if end <= start:
        raise ConfigError(f"--since {since} is not before --until {until}: give an earlier --since")
    t0 = time.perf_counter()
    with Stack(settings(config), need_broker=False) as stack:
        if not stack.database_url:
            raise ConfigError("no database: set LINEWATCH_DATABASE_URL, or leave it unset for the embedded one")
        try:
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                data = fetch_report(conn, start=start, end=end, asset=asset, characteristic=characteristic)
        except psycopg.errors.UndefinedTable as e:
            raise ConfigError(f"the database has no linewatch tables ({e}); run `linewatch db migrate` first, "
                              "or point LINEWATCH_DATABASE_URL at the right database") from None
        except psycopg.errors.InsufficientPrivilege as e:
            raise ConfigError(f"the login may not read the dashboards' views ({e}); use Grafana's read-only login "
                              "or one that may SET ROLE linewatch_reader (see docs/dashboards.md)") from None
        except psycopg.OperationalError as e:
            raise InfrastructureError(f"cannot reach the database ({e}); check LINEWATCH_DATABASE_URL or "
                                      "start it, then run again") from None
    fetched = time.perf_counter() - t0
    paths = write_report(data, out)
    console.print(f"asset {data.asset or '-'}, characteristic {data.sku or '-'} / {data.characteristic or '-'}, "
                  f"{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC "
                  f"(queried as {data.role or 'the login'}: database start and queries {fetched:.1f} s, drawn in "
                  f"{time.perf_counter() - t0 - fetched:.1f} s)", highlight=False)
    if data.asset is None:
        console.print("[yellow]no data in the range:[/] every view says so; widen --since (plant data written by "
                      "`linewatch demo` or a replay carries the plant's own, older, times)")
    elif asset is not None and not any(len(f) for k, f in data.frames.items() if k.startswith("asset.score.")):
        console.print(f"[yellow]no scores for asset {asset} in the range:[/] check its name with "
                      "`linewatch alerts list` or widen --since")
    for path in paths:
        print(path)

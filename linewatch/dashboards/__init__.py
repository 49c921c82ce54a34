"""Grafana dashboards, datasource and alert rules for linewatch, generated with Grafana's Foundation SDK.

Why code and not hand-exported JSON: a dashboard exported from the Grafana UI is thousands of lines of
noise that nobody reviews, and its SQL silently breaks when a view changes. Here every panel is a few
lines of Python on the SDK's builders (``grafana_foundation_sdk.builders``), its SQL lives once in
:data:`~linewatch.dashboards.queries.QUERIES` with the columns it must return, the test suite runs every
query as the read-only role (:func:`~linewatch.dashboards.queries.check_queries`), and the checked-in
files under ``dashboards/`` are regenerated, never edited::

    linewatch dashboards build                 # or: python -m linewatch.dashboards --out dashboards/
    linewatch dashboards check postgresql://grafana@db/linewatch --role ''

One module per dashboard (:mod:`.overview`, :mod:`.asset`, :mod:`.spc`, :mod:`.multivariate`,
:mod:`.drift`, :mod:`.pipeline`), each with a stable ``UID`` (its file is ``dashboards/<uid>.json``) and
the ``QUESTION`` it answers; :mod:`.provisioning` writes the datasource, dashboard provider and alert rules.

>>> dash = DASHBOARDS["linewatch-overview"].build()
>>> dash["title"], {p["datasource"]["uid"] for p in dash["panels"]}
('linewatch / overview', {'linewatch-pg'})
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linewatch.dashboards import alerting, asset, drift, multivariate, overview, pipeline, spc
from linewatch.dashboards.alerting import DEFAULT_DEADLETTER_BURST, RULES_FILE, alert_rules
from linewatch.dashboards.check import check_queries
from linewatch.dashboards.datasource import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER
from linewatch.dashboards.provisioning import (
    DASHBOARDS_MOUNT,
    DATASOURCE_ENV,
    DATASOURCE_FILE,
    PROVIDER_FILE,
    dashboard_provisioning,
    datasource_provisioning,
    render_provisioning,
)
from linewatch.dashboards.queries import QUERIES, PanelQuery, QueryResult, expand_macros

#: The Grafana release the JSON is written for; docker-compose.yml pins the same image tag.
GRAFANA_VERSION = "11.3.1"

__all__ = [
    "DASHBOARDS",
    "DASHBOARDS_MOUNT",
    "DATASOURCE_ENV",
    "DATASOURCE_FILE",
    "DATASOURCE_TYPE",
    "DATASOURCE_UID",
    "DEFAULT_DEADLETTER_BURST",
    "FOLDER",
    "GRAFANA_VERSION",
    "OVERVIEW_FILE",
    "PROVIDER_FILE",
    "QUERIES",
    "RULES_FILE",
    "SPC_FILE",
    "DashboardSpec",
    "PanelQuery",
    "QueryResult",
    "alert_rules",
    "build_all",
    "check_queries",
    "dashboard_provisioning",
    "datasource_provisioning",
    "expand_macros",
    "main",
    "render",
]


@dataclass(frozen=True)
class DashboardSpec:
    """One generated dashboard: its uid (and so its file name), title, the question it answers, its builder."""

    uid: str
    title: str
    question: str
    build: Callable[[], dict[str, Any]]

    @property
    def file(self) -> str:
        return f"{self.uid}.json"


#: Every dashboard, by uid, in the order the docs list them.
DASHBOARDS: dict[str, DashboardSpec] = {
    m.UID: DashboardSpec(m.UID, m.TITLE, m.QUESTION, m.build)
    for m in (overview, asset, spc, multivariate, drift, pipeline)
}
OVERVIEW_FILE = DASHBOARDS[overview.UID].file
SPC_FILE = DASHBOARDS[spc.UID].file


def _json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render(deadletter_burst: int = DEFAULT_DEADLETTER_BURST) -> dict[str, str]:
    """Every generated file: relative path -> exact text (deterministic, so staleness is a diff)."""
    files = {spec.file: _json(spec.build()) for spec in DASHBOARDS.values()}
    return files | render_provisioning() | alerting.render(deadletter_burst=deadletter_burst)


def build_all(out_dir: Path, deadletter_burst: int = DEFAULT_DEADLETTER_BURST) -> list[Path]:
    """Write every generated file under ``out_dir``, touching only files whose text changes; returns those."""
    changed = []
    for rel, text in render(deadletter_burst).items():
        path = Path(out_dir) / rel
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        changed.append(path)
    return changed


def stray_dashboards(out_dir: Path) -> list[Path]:
    """``*.json`` in ``out_dir`` that no dashboard generates (a renamed uid leaves its old file behind,
    and Grafana's file provider keeps loading it until it is deleted)."""
    generated = {spec.file for spec in DASHBOARDS.values()}
    return sorted(p for p in Path(out_dir).glob("*.json") if p.name not in generated)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linewatch.dashboards``: the same as ``linewatch dashboards build`` / ``check``."""
    parser = argparse.ArgumentParser(prog="python -m linewatch.dashboards",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dashboards"),
                        help="directory to write the dashboards and provisioning into (default: dashboards)")
    parser.add_argument("--deadletter-burst", type=int, default=DEFAULT_DEADLETTER_BURST,
                        help="dead letters per topic in 5 minutes that fire the dead-letter alert rule")
    parser.add_argument("--check", metavar="DATABASE_URL",
                        help="instead of writing, run every query against this database (read-only, rolled back)")
    parser.add_argument("--role", default="linewatch_reader",
                        help="role to SET for --check, as Grafana's login has it; '' = the login's own")
    parser.add_argument("--timescale", action="store_true",
                        help="with --check: expand $__timeGroup as Grafana does for a TimescaleDB datasource")
    args = parser.parse_args(argv)
    if args.check:
        results = check_queries(args.check, role=args.role or None,
                                flavour="timescale" if args.timescale else "plain")
        failed = [r for r in results if r.error]
        for r in results:
            print(f"{'FAIL' if r.error else 'ok  '} {r.query.where}" + (f": {r.error}" if r.error else ""))
        print(f"{len(results) - len(failed)} of {len(results)} queries ran with the expected columns")
        return 1 if failed else 0
    for path in build_all(args.out, args.deadletter_burst):
        print(path)
    return 0

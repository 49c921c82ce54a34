"""``linewatch dashboards push``: make a running Grafana hold the generated dashboards and alerting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import console
from linewatch.errors import ConfigError

_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim"}


def push_cmd(
    url: Annotated[str, typer.Option(envvar="LINEWATCH_GRAFANA_URL",
                                     help="Grafana's base URL, e.g. https://grafana.plant:3000")],
    token: Annotated[str | None, typer.Option(
        envvar="LINEWATCH_GRAFANA_TOKEN", show_envvar=True,
        help="service-account token (Editor role, alerting write access); or use --user/--password")] = None,
    user: Annotated[str | None, typer.Option(help="basic-auth user instead of a token")] = None,
    password: Annotated[str | None, typer.Option(envvar="LINEWATCH_GRAFANA_PASSWORD",
                                                 help="basic-auth password for --user")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only read: report what a push would create or "
                                          "update, and send no write")] = False,
    dashboards: Annotated[Path, typer.Option(help="directory of the dashboard JSON files (*.json)")] = Path(
        "dashboards"),
    provisioning: Annotated[Path, typer.Option(
        help="provisioning directory; its alerting/*.yaml are pushed")] = Path("dashboards/provisioning"),
    timeout: Annotated[float, typer.Option(help="seconds to wait for each answer")] = 10.0,
) -> None:
    """Push the dashboards, alert rules, contact points, notification policy and mute timings to Grafana.

    Idempotent by uid: each resource is compared with what the server holds and reported as
    created, updated or unchanged; a second push changes nothing. The contact points' webhook URLs
    come from GRAFANA_ALERT_MAINTENANCE_URL, GRAFANA_ALERT_QUALITY_URL and GRAFANA_ALERT_ML_URL
    (unset: a placeholder .example.invalid address that delivers nowhere). The policy tree replaces the
    organisation's. Do not push to a Grafana that file-provisions the same resources (the compose
    stack): it refuses API changes to them.
    """
    from linewatch.dashboards.push import push

    if token and (user or password):
        raise ConfigError("give either --token or --user/--password, not both (unset LINEWATCH_GRAFANA_TOKEN "
                          "to use --user)")
    if bool(user) != bool(password):
        raise ConfigError("--user and --password go together (or use --token)")
    credential: str | tuple[str, str] | None = token or ((user, password) if user and password else None)
    report = push(url, credential, dashboards, provisioning, dry_run=dry_run, timeout=timeout)
    for c in report.changes:
        verb = f"would be {c.action}" if report.dry_run and c.action != "unchanged" else c.action
        console.print(f"[{_STYLE[c.action]}]{verb:>17}[/] {c.kind} {c.key}")
    console.print(report.summary())

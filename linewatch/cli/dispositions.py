"""``linewatch disposition`` (an operator's verdict on an alert or event) and ``linewatch dispositions export``.

A disposition is stored in the ``dispositions`` table (idempotent on its ``disposition_id``) and
published on the ``dispositions`` topic keyed by the asset, so plant systems hear of it and the
dispositions agent would store it again as a no-op. The command prints what the verdict joined
to: the alert, its asset, its top contributors and the model versions behind its scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, settings
from linewatch.cli.feedback_options import SinceOption, operator_name, parse_time
from linewatch.schemas.messages import Verdict  # pydantic only: already loaded by the settings

LABELS = tuple(v.value for v in Verdict)
dispositions_app = typer.Typer(help="The labelled set operators' dispositions make.", no_args_is_help=True)


def disposition_cmd(
    label: Annotated[str, typer.Option(help="true_defect, false_alarm, acceptable_variation or new_sku")],
    alert_id: Annotated[str | None, typer.Argument(help="the alert's id (see `linewatch alerts list`)")] = None,
    defect_class: Annotated[str | None, typer.Option("--class", help="what the defect was, in the plant's words "
                                                                      "(e.g. scratch, porosity)")] = None,
    note: Annotated[str, typer.Option(help="free text for whoever reads it later")] = "",
    operator: Annotated[str | None, typer.Option(help="who judged it (default: $LINEWATCH_OPERATOR, else the "
                                                      "login name)")] = None,
    event: Annotated[str | None, typer.Option("--event", help="an event id instead of an alert id: a verdict on "
                                                              "one scored event")] = None,
    config: ConfigOption = None,
) -> None:
    """Record an operator's verdict on an alert (or one event): it feeds threshold proposals and retraining."""
    import uuid

    from linewatch.embedded.stack import Stack
    from linewatch.errors import ConfigError
    from linewatch.feedback.alerts import contributor_names, parse_alert_id, require_alert
    from linewatch.feedback.dispositions import to_row
    from linewatch.kafka import Publisher
    from linewatch.schemas.codec import encode
    from linewatch.schemas.messages import Disposition
    from linewatch.schemas.rows import DispositionRow
    from linewatch.schemas.topics import DISPOSITIONS
    from linewatch.storage.connection import connect
    from linewatch.storage.migrations import migrate
    from linewatch.storage.writer import BatchWriter

    if label not in LABELS:
        raise ConfigError(f"--label {label!r}: give one of {', '.join(LABELS)}")
    if (alert_id is None) == (event is None):
        raise ConfigError("name the alert (ALERT_ID, see `linewatch alerts list`) or one event (--event EVENT_ID), "
                          "not both")
    s = settings(config)
    who = operator_name(operator)
    with Stack(s) as stack:
        migrate(stack.database_url)
        with connect(stack.database_url) as conn:
            if alert_id is not None:
                alert = require_alert(conn, parse_alert_id(alert_id))
                target = {"alert_id": alert.alert_id}
                asset, versions, contributors = alert.asset_id, alert.model_versions, \
                    contributor_names(alert.contributors)
                what = f"alert {alert.alert_id} ({alert.kind}, {alert.state}, {alert.severity}, opened " \
                       f"{alert.opened_at.isoformat()})"
            else:
                try:
                    eid = uuid.UUID(event)  # type: ignore[arg-type]
                except ValueError:
                    raise ConfigError(f"--event {event!r} is not an event id (a UUID)") from None
                found = conn.execute("SELECT asset_id, array_agg(DISTINCT detector || '@' || model_version), "
                                     "array_agg(top_feature) FILTER (WHERE is_anomaly) FROM scores "
                                     "WHERE event_id = %s GROUP BY asset_id", (eid,)).fetchone()
                if found is None:
                    raise ConfigError(f"no scores for event {eid}; event ids are in the `scores` table and in "
                                      "`linewatch alerts list --json` (event_ids)")
                target = {"event_id": eid}
                asset, versions, contributors = found[0], found[1], [c for c in found[2] or [] if c]
                what = f"event {eid}"
        d = Disposition(**target, verdict=label, operator=who, defect_class=defect_class, note=note)
        writer = BatchWriter(stack.database_url)
        try:
            stored = writer.write({DispositionRow: [to_row(d)]}).inserted.get("dispositions", 0)
        finally:
            writer.close()
        publisher = Publisher(stack.bootstrap, security=stack.kafka_security)
        publisher.publish(DISPOSITIONS.name, [(asset.encode(), encode(d))])
        publisher.flush()
    console.print(f"disposition {d.disposition_id}: {label}{f' ({defect_class})' if defect_class else ''} by {who}"
                  + ("" if stored else " (already stored)"))
    console.print(f"  on {what}, asset {asset}")
    console.print(f"  top contributors: {', '.join(contributors) or 'none recorded'}")
    console.print(f"  model versions: {', '.join(versions) or 'none recorded'}")
    console.print("  see what it changes with `linewatch thresholds propose --asset " + asset + "`")


@dispositions_app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Argument(help="file to write: .csv or .parquet")],
    since: SinceOption = None,
    verdict: Annotated[list[str] | None, typer.Option(help="only this verdict (repeat for several)")] = None,
    config: ConfigOption = None,
) -> None:
    """Export the labelled set: one row per dispositioned event, with its verdict, class and features."""
    from linewatch.embedded.stack import Stack
    from linewatch.errors import ConfigError
    from linewatch.feedback.labelled_set import write_labelled_set
    from linewatch.storage.migrations import migrate

    if out.suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{out}: the labelled set is written as .csv or .parquet; name the file so")
    bad = [v for v in verdict or [] if v not in LABELS]
    if bad:
        raise ConfigError(f"--verdict {bad[0]!r}: give one of {', '.join(LABELS)}")
    s = settings(config)
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        n, n_features = write_labelled_set(stack.database_url, out, since=parse_time(since, "--since"),
                                           verdicts=verdict or [])
    console.print(f"{n} labelled event(s) with {n_features} feature column(s) written to {out}")

"""Grafana unified-alerting provisioning for linewatch: rules, contact points, routing and mute timings.

Why the rules read the ``alerts`` table and not the scores: fusion (``linewatch.fusion``) already
turns scores into incidents - it fuses the modalities, applies the cool-down, and suppresses
everything inside declared maintenance windows, machine stops and data-quality gaps. A Grafana rule
counting raw anomalies would re-decide all of that, differently, and page people for what fusion
deliberately kept quiet. So Grafana only *delivers* what linewatch decided:

- ``linewatch-open-incident``: one alert instance per asset + route + worst severity for every
  open anomaly incident (``open_alerts`` view, shadow alerts excluded), labelled ``asset_id``,
  ``route``, ``severity`` and carrying the top contributors of the opening event (the causes that
  tripped it; taken from the opening event so the instance keeps one identity while fusion
  updates it) and a link to the asset drill-down dashboard (uid ``linewatch-asset``);
- ``linewatch-retrain-recommended``: open ``retrain_recommended`` alerts (a model's baseline moved),
  labelled with the model versions;
- ``linewatch-deadletter-burst``: more than :data:`DEFAULT_DEADLETTER_BURST` undecodable messages on
  one source topic within five minutes, routed to ``ml`` (the ops / ML engineers who own the
  pipeline).

Contact points (webhooks) exist per route; their URLs come from the environment
(:data:`CONTACT_ENV`: ``GRAFANA_ALERT_MAINTENANCE_URL``, ``GRAFANA_ALERT_QUALITY_URL``,
``GRAFANA_ALERT_ML_URL``), which Grafana expands in provisioning files. When a variable is
not set, the compose file passes :data:`PLACEHOLDER_URLS` - ``https://<route>.example.invalid/...``,
an address that can never resolve (RFC 6761), so an unconfigured stack delivers nothing rather than
something to a stranger, and the failed deliveries show in Grafana's contact point status.

The notification policy routes on the ``route`` label and groups by asset. **It replaces the
organisation's whole policy tree** (Grafana has one per organisation); alerts without a ``route``
label go to the ``ml`` contact point.

Maintenance windows, two kinds:

- *ad-hoc* windows (``linewatch maintenance add``, rows of ``maintenance_windows``) are handled
  upstream: fusion suppresses alerts inside them (writing ``alert_suppressions``), so no row reaches
  ``alerts`` and nothing fires. No Grafana rule or mute timing needs them, and none could: Grafana
  mute timings are recurring time intervals, not database rows.
- the *planned* recurring slot (e.g. every Sunday 06:00-10:00) is the mute timing
  :data:`PLANNED_MAINTENANCE`, configurable with :class:`PlannedMaintenance`; it mutes the
  maintenance and quality routes (a stopped line restarting looks anomalous) but not ``ml``, since
  dead letters during maintenance are still a pipeline fault.

>>> files = render()
>>> sorted(files)  # doctest: +NORMALIZE_WHITESPACE
['provisioning/alerting/linewatch-contact-points.yaml', 'provisioning/alerting/linewatch-mute-timings.yaml',
 'provisioning/alerting/linewatch-policies.yaml', 'provisioning/alerting/linewatch-rules.yaml']
>>> [r["uid"] for r in alert_rules()["groups"][0]["rules"]]
['linewatch-open-incident', 'linewatch-retrain-recommended', 'linewatch-deadletter-burst']
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linewatch.dashboards.datasource import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER
from linewatch.dashboards.provisioning import CLOCK_TIME, to_yaml
from linewatch.dashboards.queries import PanelQuery

RULE_GROUP = "linewatch-alerts"
RULE_GROUP_INTERVAL = "1m"
#: uid of the asset drill-down dashboard; its asset variable is called ``asset``.
ASSET_DASHBOARD_UID = "linewatch-asset"
#: The routes fusion writes (``alerts.route``) and the contact point each goes to.
ROUTES: tuple[str, ...] = ("maintenance", "quality", "ml")
CONTACT_POINTS: dict[str, str] = {r: f"linewatch-{r}" for r in ROUTES}
#: Environment variable holding each route's webhook URL. ``GRAFANA_`` like ``GRAFANA_PG_*``: Grafana's
#: provisioning reads them, not linewatch's settings (``LINEWATCH_*`` are settings fields only).
CONTACT_ENV: dict[str, str] = {r: f"GRAFANA_ALERT_{r.upper()}_URL" for r in ROUTES}
#: What an unset variable means: a reserved, never-resolving address (RFC 6761 ``.invalid``).
PLACEHOLDER_URLS: dict[str, str] = {CONTACT_ENV[r]: f"https://{r}.example.invalid/linewatch-alerts"
                                    for r in ROUTES}
#: Routes the planned-maintenance mute timing applies to.
MUTED_IN_MAINTENANCE: tuple[str, ...] = ("maintenance", "quality")
#: Undecodable messages on one topic within :data:`DEADLETTER_WINDOW` that make a burst. A healthy
#: producer sends none; a handful is a single bad batch, ten is a producer that has gone wrong.
DEFAULT_DEADLETTER_BURST = 10
DEADLETTER_WINDOW = "5 minutes"

RULES_FILE = "provisioning/alerting/linewatch-rules.yaml"
CONTACT_POINTS_FILE = "provisioning/alerting/linewatch-contact-points.yaml"
POLICIES_FILE = "provisioning/alerting/linewatch-policies.yaml"
MUTE_TIMINGS_FILE = "provisioning/alerting/linewatch-mute-timings.yaml"

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class PlannedMaintenance:
    """The recurring planned-maintenance slot muted in Grafana (ad-hoc windows are fusion's job).

    >>> PlannedMaintenance(weekdays=("saturday",), start="22:00", end="24:00").name
    'linewatch-planned-maintenance'
    >>> PlannedMaintenance(start="10:00", end="06:00")
    Traceback (most recent call last):
    ValueError: planned maintenance must end after it starts, got 10:00-06:00
    """

    weekdays: tuple[str, ...] = ("sunday",)
    start: str = "06:00"
    end: str = "10:00"
    #: IANA zone the times are in (the plant's local time, so the slot does not move with DST).
    location: str = "UTC"
    name: str = "linewatch-planned-maintenance"

    def __post_init__(self) -> None:
        bad = [d for d in self.weekdays if d not in _WEEKDAYS]
        if not self.weekdays or bad:
            raise ValueError(f"weekdays must be some of {', '.join(_WEEKDAYS)}, got {list(self.weekdays)}")
        for t in (self.start, self.end):
            if not CLOCK_TIME.match(t):
                raise ValueError(f"planned maintenance times are HH:MM (00:00-24:00), got {t!r}")
        if self.end <= self.start:
            raise ValueError(f"planned maintenance must end after it starts, got {self.start}-{self.end}")


PLANNED_MAINTENANCE = PlannedMaintenance()


# --- the queries --------------------------------------------------------------------------------

#: Top three contributors of the opening event's ``contributors`` JSON array as text,
#: ``name (modality, 62%)``, largest share first (fusion writes them in that order), and the defect
#: classes a classifier recognised in the open incidents (empty where none is trained or sure), so a
#: notification says "scratch" where it can, not only which score moved.
OPEN_INCIDENT_SQL = """
SELECT o.asset_id, o.route, o.max_severity AS severity,
       coalesce((array_agg(opening.top ORDER BY o.opened_at))[1], '') AS top_contributors,
       coalesce(string_agg(DISTINCT o.recognised_class, ', ' ORDER BY o.recognised_class), '')
           AS recognised_classes,
       count(*)::float8 AS open_incidents
FROM open_alerts o
CROSS JOIN LATERAL (
    SELECT (SELECT string_agg(format('%s (%s, %s%%)', c ->> 'name',
                                     coalesce(c ->> 'modality', c ->> 'kind', '?'),
                                     round(100 * coalesce((c ->> 'share')::numeric, 0))), ', ' ORDER BY n)
            FROM jsonb_array_elements(a.contributors) WITH ORDINALITY AS e (c, n)
            WHERE n <= 3) AS top
    FROM alerts a
    WHERE a.alert_id = o.alert_id AND a.state = 'open'
    ORDER BY a.ts DESC LIMIT 1
) AS opening
WHERE o.kind = 'anomaly' AND NOT o.shadow
GROUP BY o.asset_id, o.route, o.max_severity
ORDER BY o.asset_id, o.route, o.max_severity
"""

#: One row per asset + route + severity with open retrain recommendations, naming the model versions.
RETRAIN_SQL = """
SELECT o.asset_id, o.route, o.max_severity AS severity,
       coalesce(string_agg(DISTINCT v.mv, ', ' ORDER BY v.mv), '') AS model_versions,
       count(DISTINCT o.alert_id)::float8 AS open_recommendations
FROM open_alerts o
LEFT JOIN LATERAL unnest(o.model_versions) AS v (mv) ON true
WHERE o.kind = 'retrain_recommended' AND NOT o.shadow
GROUP BY o.asset_id, o.route, o.max_severity
ORDER BY o.asset_id, o.route, o.max_severity
"""

#: Dead letters per source topic within the window (no asset: a producer, not a machine, is at fault).
DEADLETTER_SQL = f"""
SELECT source_topic, count(*)::float8 AS deadletters
FROM deadletters
WHERE received_at > now() - interval '{DEADLETTER_WINDOW}'
GROUP BY source_topic
ORDER BY source_topic
"""


@dataclass(frozen=True)
class RuleQuery:
    """One rule's SQL and the columns it returns: labels (text) and the single value (number)."""

    uid: str
    sql: str
    labels: tuple[str, ...]
    value: str


RULE_QUERIES: tuple[RuleQuery, ...] = (
    RuleQuery("linewatch-open-incident", OPEN_INCIDENT_SQL,
              ("asset_id", "route", "severity", "top_contributors", "recognised_classes"), "open_incidents"),
    RuleQuery("linewatch-retrain-recommended", RETRAIN_SQL,
              ("asset_id", "route", "severity", "model_versions"), "open_recommendations"),
    RuleQuery("linewatch-deadletter-burst", DEADLETTER_SQL, ("source_topic",), "deadletters"),
)


# --- rules --------------------------------------------------------------------------------------


def _drilldown(asset_label: str = "{{ $labels.asset_id | urlquery }}") -> str:
    """The asset drill-down dashboard for the alert's asset, as an absolute link for notifications."""
    return f"{{{{ externalURL }}}}/d/{ASSET_DASHBOARD_UID}?var-asset={asset_label}&from=now-6h&to=now"


def _rule(query: RuleQuery, title: str, *, threshold: float, labels: Mapping[str, str],
          annotations: Mapping[str, str]) -> dict[str, Any]:
    """A multi-dimensional rule: every row of ``query`` whose value exceeds ``threshold`` is an instance."""
    return {
        "uid": query.uid, "title": title, "condition": "B",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": 600, "to": 0}, "datasourceUid": DATASOURCE_UID,
             "model": {"refId": "A", "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
                       "editorMode": "code", "format": "table", "rawQuery": True,
                       "rawSql": query.sql.strip(), "intervalMs": 1000, "maxDataPoints": 43200}},
            {"refId": "B", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
             "model": {"refId": "B", "type": "threshold", "expression": "A",
                       "datasource": {"type": "__expr__", "uid": "__expr__"},
                       "conditions": [{"evaluator": {"type": "gt", "params": [threshold]}}]}},
        ],
        # No rows = nothing open: OK. A failing query must be seen, not read as "all quiet".
        "noDataState": "OK", "execErrState": "Error",
        # fusion has already debounced (cool-down, minimum evidence): waiting again only delays.
        "for": "0s",
        "isPaused": False,
        "labels": {"source": "linewatch", **labels},
        "annotations": dict(annotations),
    }


def alert_rules(deadletter_burst: int = DEFAULT_DEADLETTER_BURST) -> dict[str, Any]:
    """The rule group, evaluated every minute, in the file-provisioning format (apiVersion 1)."""
    if deadletter_burst < 0:
        raise ValueError(f"dead-letter burst must be >= 0 messages, got {deadletter_burst}")
    incident, retrain, deadletter = RULE_QUERIES
    return {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": RULE_GROUP, "folder": FOLDER, "interval": RULE_GROUP_INTERVAL,
        "rules": [
            _rule(incident, "Open linewatch incident", threshold=0, labels={}, annotations={
                "summary": "{{ $labels.asset_id }}: {{ $values.A.Value }} open {{ $labels.severity }} "
                           "incident(s) for {{ $labels.route }}",
                "description": "linewatch fused the scores of {{ $labels.asset_id }} into an incident that is "
                               "still open. Top contributors when it opened: {{ $labels.top_contributors }}. "
                               "{{ if $labels.recognised_classes }}Recognised defect class: "
                               "{{ $labels.recognised_classes }}. {{ end }}"
                               "Acknowledge or close it with `linewatch alerts`.",
                "drilldown": _drilldown(),
            }),
            _rule(retrain, "Retrain recommended", threshold=0, labels={}, annotations={
                "summary": "{{ $labels.asset_id }}: retrain recommended for {{ $labels.model_versions }}",
                "description": "The baseline of {{ $labels.model_versions }} on {{ $labels.asset_id }} has "
                               "moved for long enough that its calibration no longer holds. Retrain on recent "
                               "known-good data (`linewatch drift check` prints the command).",
                "drilldown": _drilldown(),
            }),
            _rule(deadletter, "Dead-letter burst", threshold=deadletter_burst,
                  labels={"route": "ml", "severity": "warning"}, annotations={
                      "summary": f"{{{{ $values.A.Value }}}} undecodable messages on {{{{ $labels.source_topic }}}} "
                                 f"in {DEADLETTER_WINDOW}",
                      "description": "A producer sends messages linewatch cannot decode or validate; they are "
                                     "kept byte for byte in the deadletters table with the reason.",
                  }),
        ],
    }]}


# --- contact points, policy, mute timing --------------------------------------------------------


def contact_points() -> dict[str, Any]:
    """One webhook contact point per route; the URL is ``${GRAFANA_ALERT_<ROUTE>_URL}``."""
    return {"apiVersion": 1, "contactPoints": [
        {"orgId": 1, "name": CONTACT_POINTS[r], "receivers": [{
            "uid": f"{CONTACT_POINTS[r]}-webhook", "type": "webhook",
            "settings": {"url": f"${{{CONTACT_ENV[r]}}}", "httpMethod": "POST"},
            "disableResolveMessage": False,
        }]}
        for r in ROUTES
    ]}


def notification_policies(maintenance: PlannedMaintenance = PLANNED_MAINTENANCE) -> dict[str, Any]:
    """The policy tree: one child per route (matched on the ``route`` label), grouped by asset."""
    def child(route: str) -> dict[str, Any]:
        node: dict[str, Any] = {
            "receiver": CONTACT_POINTS[route], "object_matchers": [["route", "=", route]],
            # one notification per asset; dead letters have no asset, so their topic splits them
            "group_by": ["asset_id"] if route != "ml" else ["alertname", "asset_id", "source_topic"],
        }
        if route in MUTED_IN_MAINTENANCE:
            node["mute_time_intervals"] = [maintenance.name]
        return node

    return {"apiVersion": 1, "policies": [{
        "orgId": 1, "receiver": CONTACT_POINTS["ml"], "group_by": ["alertname", "asset_id"],
        "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
        "routes": [child(r) for r in ROUTES],
    }]}


def mute_timings(maintenance: PlannedMaintenance = PLANNED_MAINTENANCE) -> dict[str, Any]:
    """The recurring planned-maintenance slot as a Grafana mute timing."""
    return {"apiVersion": 1, "muteTimes": [{
        "orgId": 1, "name": maintenance.name,
        "time_intervals": [{"times": [{"start_time": maintenance.start, "end_time": maintenance.end}],
                            "weekdays": list(maintenance.weekdays), "location": maintenance.location}],
    }]}


# --- rendering ----------------------------------------------------------------------------------


def render(*, deadletter_burst: int = DEFAULT_DEADLETTER_BURST,
           maintenance: PlannedMaintenance = PLANNED_MAINTENANCE) -> dict[str, str]:
    """Every alerting file: path relative to ``dashboards/`` -> exact text (deterministic)."""
    return {
        RULES_FILE: to_yaml(alert_rules(deadletter_burst)),
        CONTACT_POINTS_FILE: to_yaml(contact_points()),
        POLICIES_FILE: to_yaml(notification_policies(maintenance)),
        MUTE_TIMINGS_FILE: to_yaml(mute_timings(maintenance)),
    }


def write_provisioning(out_dir: Path, *, deadletter_burst: int = DEFAULT_DEADLETTER_BURST,
                       maintenance: PlannedMaintenance = PLANNED_MAINTENANCE) -> list[Path]:
    """Write ``provisioning/alerting/*.yaml`` under ``out_dir`` (``dashboards/`` in the repository,
    which docker-compose.yml mounts); returns the paths written."""
    written = []
    for rel, text in render(deadletter_burst=deadletter_burst, maintenance=maintenance).items():
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def iter_rule_sql(rules: Mapping[str, Any] | None = None) -> Iterator[tuple[str, str]]:
    """``(rule uid, SQL)`` of every query a rule sends to the linewatch datasource."""
    for group in (rules or alert_rules())["groups"]:
        for rule in group["rules"]:
            for d in rule["data"]:
                if d["datasourceUid"] == DATASOURCE_UID:
                    yield rule["uid"], d["model"]["rawSql"]


_ENV_REF = re.compile(r"\$\{(\w+)\}")


def resolve_contact_env(doc: Any, environ: Mapping[str, str],
                        known: Sequence[str] = tuple(CONTACT_ENV.values())) -> Any:
    """``doc`` with ``${GRAFANA_ALERT_*}`` replaced as Grafana's file provisioning would, using
    :data:`PLACEHOLDER_URLS` for unset ones: the HTTP API (``linewatch dashboards push``) expands
    nothing. Other ``$`` text (``$labels`` in annotations) is left alone.

    >>> resolve_contact_env({"url": "${GRAFANA_ALERT_ML_URL}", "t": "$labels.x"}, {})
    {'url': 'https://ml.example.invalid/linewatch-alerts', 't': '$labels.x'}
    """
    if isinstance(doc, dict):
        return {k: resolve_contact_env(v, environ, known) for k, v in doc.items()}
    if isinstance(doc, list):
        return [resolve_contact_env(v, environ, known) for v in doc]
    if isinstance(doc, str):
        return _ENV_REF.sub(lambda m: (environ.get(m[1]) or PLACEHOLDER_URLS[m[1]]) if m[1] in known else m[0],
                            doc)
    return doc


def alert_queries() -> list[PanelQuery]:
    """The rules' queries in registry form, so :func:`~linewatch.dashboards.queries.check_queries` runs them
    with the panels' (label columns text, then the one number Grafana thresholds)."""
    return [PanelQuery(f"alert rule {q.uid}", q.sql, None, {**dict.fromkeys(q.labels, "text"), q.value: "number"})
            for q in RULE_QUERIES]

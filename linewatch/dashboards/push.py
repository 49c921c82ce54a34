"""Push the generated dashboards and alerting resources to a running Grafana over its HTTP API.

Why a push besides file provisioning: the compose stack mounts ``dashboards/`` into its own
Grafana, but a plant often has one central Grafana that linewatch does not deploy. ``push`` makes
that server match the checked-in files, idempotently, by uid (dashboards, rules, contact points)
or name (mute timings):

- it GETs what the server has and compares only the fields linewatch sets (the server adds ids,
  versions, timestamps and provenance), so a second push reports everything ``unchanged`` and
  sends no write at all;
- ``dry_run=True`` sends GETs only and reports what a real push would create or update.

Endpoints used (all through ``grafana_client.GrafanaApi``), in this order, since a policy names
contact points and mute timings, and rules and dashboards live in the folder:

==================  ===========================================  =================================
resource            read                                         write
==================  ===========================================  =================================
folder              ``GET /api/folders/{uid}``                   ``POST /api/folders``
dashboard           ``GET /api/dashboards/uid/{uid}``            ``POST /api/dashboards/db``
contact point       ``GET /api/v1/provisioning/contact-points``  ``POST`` / ``PUT .../{uid}``
mute timing         ``GET /api/v1/provisioning/mute-timings``    ``POST`` / ``PUT .../{name}``
policy tree         ``GET /api/v1/provisioning/policies``        ``PUT /api/v1/provisioning/policies``
alert rule          ``GET /api/v1/provisioning/alert-rules/{uid}``  ``POST`` / ``PUT .../{uid}``
rule group          ``GET .../folder/{uid}/rule-groups/{group}``  ``PUT`` (its evaluation interval)
==================  ===========================================  =================================

Resources written through the API get Grafana's "api" provenance (locked in the UI, like file
provisioning). A Grafana that *also* file-provisions the same resources (the compose stack) refuses
API updates of them: push to one or the other. The datasource (uid ``linewatch-pg``) is not pushed:
it holds credentials, which belong in the server's own provisioning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from linewatch.dashboards import alerting
from linewatch.errors import ConfigError, InfrastructureError, LinewatchError

Action = Literal["created", "updated", "unchanged"]
T = TypeVar("T")

#: Fields Grafana keeps on a stored dashboard that the generated JSON does not decide.
_DASHBOARD_SERVER_FIELDS = ("id", "version")


class GrafanaPushError(LinewatchError):
    """Grafana refused a request; the message names the request, the answer and what to do."""


class GrafanaUnreachableError(InfrastructureError):
    """No answer from Grafana at all (wrong URL, server down, timeout)."""


class GrafanaAuthError(ConfigError):
    """Grafana rejected the credentials or their permissions."""


@dataclass(frozen=True)
class Change:
    """What push did (or, in a dry run, would do) to one resource."""

    kind: str  # folder, dashboard, contact-point, mute-timing, policy-tree, alert-rule, rule-group
    key: str   # uid, or the name for mute timings and rule groups
    action: Action


@dataclass
class PushReport:
    """Every resource push looked at, with its action; ``dry_run`` says whether anything was written."""

    url: str
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    def action(self, kind: str, key: str) -> Action:
        """The action taken on one resource (KeyError when push never looked at it)."""
        for c in self.changes:
            if (c.kind, c.key) == (kind, key):
                return c.action
        raise KeyError(f"{kind} {key}")

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def counts(self) -> dict[str, int]:
        out = {"created": 0, "updated": 0, "unchanged": 0}
        for c in self.changes:
            out[c.action] += 1
        return out

    def summary(self) -> str:
        n = self.counts()
        verb = "would be" if self.dry_run else "were"
        return (f"{self.url}: {n['created']} {verb} created, {n['updated']} {verb} updated, "
                f"{n['unchanged']} unchanged")


# --- comparing ----------------------------------------------------------------------------------


def covers(server: Any, desired: Any) -> bool:
    """Whether ``server`` already holds ``desired``: every key linewatch sets has the same value;
    keys only the server has (ids, timestamps, provenance, defaults) do not count. Lists must match
    element by element.

    >>> covers({"a": 1, "id": 7, "b": [{"x": 1, "y": 2}]}, {"a": 1, "b": [{"x": 1}]})
    True
    >>> covers({"a": 1, "b": [{"x": 1}]}, {"a": 1, "b": [{"x": 1}, {"x": 2}]})
    False
    """
    if isinstance(desired, dict):
        return isinstance(server, dict) and all(k in server and covers(server[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(server, list) and len(server) == len(desired)
                and all(covers(s, d) for s, d in zip(server, desired, strict=True)))
    if isinstance(desired, float) or isinstance(server, float):
        return isinstance(server, int | float) and float(server) == float(desired)
    return bool(server == desired)


# --- what to push, from the files ---------------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """The resources in the checked-in files, in the HTTP API's shapes."""

    dashboards: dict[str, dict[str, Any]]
    contact_points: list[dict[str, Any]]
    mute_timings: list[dict[str, Any]]
    policy_tree: dict[str, Any] | None
    rules: list[dict[str, Any]]
    groups: dict[str, int]  # rule group title -> interval in seconds


def _seconds(duration: str) -> int:
    """``1m`` / ``30s`` / ``1h`` (the group intervals the files use) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if not duration or duration[-1] not in units or not duration[:-1].isdigit():
        raise ConfigError(f"rule group interval {duration!r} is not like 30s, 1m or 1h; fix the provisioning file")
    return int(duration[:-1]) * units[duration[-1]]


def load_desired(dashboards_dir: Path, provisioning_dir: Path, environ: Mapping[str, str]) -> Desired:
    """Read ``dashboards_dir/*.json`` and ``provisioning_dir/alerting/*.yaml`` into API payloads.

    The file-provisioning format nests rules in groups and receivers in contact points; the API
    wants them one by one, with the folder and group on each rule.
    """
    dashboards: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(dashboards_dir).glob("*.json")):
        doc = json.loads(path.read_text())
        if not doc.get("uid"):
            raise ConfigError(f"{path} has no uid; push upserts by uid, so every dashboard needs one")
        if doc["uid"] in dashboards:
            raise ConfigError(f"{path}: uid {doc['uid']!r} is used by two dashboards; give each its own")
        dashboards[doc["uid"]] = doc
    alerting_dir = Path(provisioning_dir) / "alerting"
    files = sorted(alerting_dir.glob("*.yaml")) + sorted(alerting_dir.glob("*.yml"))
    if not dashboards and not files:
        raise ConfigError(f"nothing to push: no *.json in {dashboards_dir} and no *.yaml in {alerting_dir}; "
                          "generate them first (`linewatch dashboards build`)")
    contact_points, mute_timings, rules, groups = [], [], [], {}
    policy_tree = None
    for path in files:
        doc = alerting.resolve_contact_env(yaml.safe_load(path.read_text()) or {}, environ)
        for group in doc.get("groups", []):
            groups[group["name"]] = _seconds(group["interval"])
            for rule in group["rules"]:
                rules.append({**rule, "folderUID": alerting.FOLDER, "ruleGroup": group["name"],
                              "orgID": group.get("orgId", 1)})
        for cp in doc.get("contactPoints", []):
            for receiver in cp["receivers"]:
                contact_points.append({"name": cp["name"], **receiver})
        for mt in doc.get("muteTimes", []):
            mute_timings.append({k: v for k, v in mt.items() if k != "orgId"})
        for tree in doc.get("policies", []):
            if policy_tree is not None:
                raise ConfigError(f"{path}: a second notification policy tree; Grafana has one per organisation")
            policy_tree = {k: v for k, v in tree.items() if k != "orgId"}
    return Desired(dashboards, contact_points, mute_timings, policy_tree, rules, groups)


# --- talking to Grafana -------------------------------------------------------------------------


def _client(url: str, credential: str | tuple[str, str] | None, timeout: float) -> Any:
    from grafana_client import GrafanaApi

    return GrafanaApi.from_url(url, credential=credential, timeout=timeout)


class _Session:
    """One push: the client, the report, and every call wrapped so a failure says what was being done."""

    def __init__(self, api: Any, report: PushReport) -> None:
        self.api, self.report = api, report

    def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        from grafana_client.client import GrafanaException
        from niquests.exceptions import RequestException

        try:
            return fn(*args)
        except RequestException as e:  # grafana-client lets connection errors through unwrapped
            raise GrafanaUnreachableError(
                f"no answer from Grafana at {self.report.url} while trying to {what}: {e}; "
                "check --url (LINEWATCH_GRAFANA_URL) and that the server is up") from e
        except GrafanaException as e:
            status = getattr(e, "status_code", 0) or 0
            if status == 0:
                raise GrafanaUnreachableError(
                    f"no answer from Grafana at {self.report.url} while trying to {what}: {e.message}; "
                    "check --url (LINEWATCH_GRAFANA_URL) and that the server is up") from e
            if status in (401, 403):
                raise GrafanaAuthError(
                    f"Grafana at {self.report.url} answered {status} to {what}: {e.message}; give a token of a "
                    "service account with the Editor role and alerting write access (--token or "
                    "LINEWATCH_GRAFANA_TOKEN), or --user/--password of an admin") from e
            hint = ("; the server failed, see its log" if status >= 500
                    else "; that server provisions it from files: change the files there, or remove them and "
                         "push again" if "provenance" in str(e.message).lower() else "")
            raise GrafanaPushError(f"Grafana at {self.report.url} answered {status} to {what}: {e.message}"
                                   + hint) from e

    def get_or_none(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """A GET that may answer 404 (the resource does not exist yet)."""
        from grafana_client.client import GrafanaClientError

        try:
            return self.call(what, fn, *args)
        except GrafanaPushError as e:
            if isinstance(e.__cause__, GrafanaClientError) and e.__cause__.status_code == 404:
                return None
            raise

    def apply(self, kind: str, key: str, server: Any, desired: Any, create: Callable[[], Any],
              update: Callable[[], Any]) -> Action:
        """Record and (unless dry run) perform the create / update that makes ``server`` hold ``desired``."""
        action: Action = "created" if server is None else "unchanged" if covers(server, desired) else "updated"
        if not self.report.dry_run and action != "unchanged":
            self.call(f"{'create' if action == 'created' else 'update'} {kind} {key}",
                      create if action == "created" else update)
        self.report.changes.append(Change(kind, key, action))
        return action


def _push_folder(s: _Session) -> None:
    p = s.api.folder
    server = s.get_or_none(f"read folder {alerting.FOLDER}", p.get_folder, alerting.FOLDER)
    s.apply("folder", alerting.FOLDER, server, {"uid": alerting.FOLDER, "title": alerting.FOLDER},
            lambda: p.create_folder(alerting.FOLDER, uid=alerting.FOLDER),
            lambda: p.update_folder(alerting.FOLDER, title=alerting.FOLDER, overwrite=True))


def _push_dashboards(s: _Session, dashboards: Mapping[str, dict[str, Any]]) -> None:
    p = s.api.dashboard
    for uid, doc in dashboards.items():
        desired = {k: v for k, v in doc.items() if k not in _DASHBOARD_SERVER_FIELDS}
        got = s.get_or_none(f"read dashboard {uid}", p.get_dashboard, uid)
        server = None
        if got is not None:
            # The folder is part of what we decide: a dashboard moved elsewhere by hand is "updated".
            server = {**got.get("dashboard", {}), "__folder": got.get("meta", {}).get("folderUid")}
        payload = {"dashboard": {**desired, "id": None}, "folderUid": alerting.FOLDER, "overwrite": True,
                   "message": "linewatch dashboards push"}
        s.apply("dashboard", uid, server, {**desired, "__folder": alerting.FOLDER},
                lambda payload=payload: p.update_dashboard(payload),
                lambda payload=payload: p.update_dashboard(payload))


def _push_alerting(s: _Session, want: Desired) -> None:
    p = s.api.alertingprovisioning
    if want.contact_points:
        existing = {c.get("uid"): c for c in s.call("list contact points", p.get_contactpoints) or []}
        for cp in want.contact_points:
            s.apply("contact-point", cp["uid"], existing.get(cp["uid"]), cp,
                    lambda cp=cp: p.create_contactpoint(cp), lambda cp=cp: p.update_contactpoint(cp["uid"], cp))
    if want.mute_timings:
        existing = {m.get("name"): m for m in s.call("list mute timings", p.get_mute_timings) or []}
        for mt in want.mute_timings:
            s.apply("mute-timing", mt["name"], existing.get(mt["name"]), mt,
                    lambda mt=mt: p.create_mute_timing(mt), lambda mt=mt: p.update_mute_timing(mt["name"], mt))
    if want.policy_tree is not None:
        tree = want.policy_tree
        server = s.call("read the notification policy tree", p.get_notification_policy_tree)
        # Grafana always has a tree (its default one), so the tree is only ever updated.
        s.apply("policy-tree", "root", server, tree,
                lambda: p.set_notification_policy_tree(tree), lambda: p.set_notification_policy_tree(tree))
    for rule in want.rules:
        server = s.get_or_none(f"read alert rule {rule['uid']}", p.get_alertrule, rule["uid"])
        s.apply("alert-rule", rule["uid"], server, rule,
                lambda rule=rule: p.create_alertrule(rule), lambda rule=rule: p.update_alertrule(rule["uid"], rule))
    for name, interval in want.groups.items():
        _push_rule_group(s, name, interval, [r["uid"] for r in want.rules if r["ruleGroup"] == name])


def _push_rule_group(s: _Session, name: str, interval: int, rule_uids: list[str]) -> None:
    """Rules created one by one land in a group with Grafana's default interval: set ours.

    The group counts as created when every one of its rules was created by this push.
    """
    p = s.api.alertingprovisioning
    server = s.get_or_none(f"read rule group {name}", p.get_rule_group, alerting.FOLDER, name)
    fresh = bool(rule_uids) and all(s.report.action("alert-rule", u) == "created" for u in rule_uids)
    in_step = server is not None and server.get("interval") == interval
    action: Action = "created" if fresh else "unchanged" if in_step else "updated"
    if server is not None and not in_step and not s.report.dry_run:
        body = {"title": name, "folderUid": alerting.FOLDER, "interval": interval, "rules": server.get("rules", [])}
        s.call(f"set the interval of rule group {name}", p.update_rule_group, alerting.FOLDER, name, body)
    s.report.changes.append(Change("rule-group", name, action))


def push(url: str, token_or_basic: str | tuple[str, str] | None, dashboards_dir: Path, provisioning_dir: Path,
         *, dry_run: bool = False, environ: Mapping[str, str] | None = None, timeout: float = 10.0) -> PushReport:
    """Make the Grafana at ``url`` hold the dashboards and alerting resources in the files.

    ``token_or_basic`` is a service-account token or ``(user, password)``; ``environ`` (default: the
    process environment) supplies the contact points' ``GRAFANA_ALERT_*_URL``, as Grafana's file
    provisioning would. Raises :class:`GrafanaUnreachableError`, :class:`GrafanaAuthError` or
    :class:`GrafanaPushError`, each saying what was being done; a failed push may have applied the
    resources before the failure (push again once fixed: it is idempotent).
    """
    want = load_desired(dashboards_dir, provisioning_dir, os.environ if environ is None else environ)
    report = PushReport(url=url, dry_run=dry_run)
    s = _Session(_client(url, token_or_basic, timeout), report)
    _push_folder(s)
    _push_dashboards(s, want.dashboards)
    _push_alerting(s, want)
    return report

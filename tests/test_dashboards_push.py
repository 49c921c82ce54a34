"""``dashboards push`` against a local stub of Grafana's HTTP API that records every request.

A Grafana server cannot run here, so :class:`StubGrafana` implements the endpoints push calls the
way Grafana 11 answers them: 404 for what does not exist, server-side fields (ids, versions,
provenance, timestamps) added to what it stores, a default policy tree, Grafana's default interval
for a rule group created by its first rule, and 401 without the right credentials.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from linewatch.dashboards import alerting as alerting
from linewatch.dashboards import push as dp

TOKEN = "stub-token"
WRITES = ("POST", "PUT", "DELETE", "PATCH")
DEFAULT_TREE = {"receiver": "grafana-default-email", "group_by": ["grafana_folder", "alertname"]}


class StubGrafana:
    """In-memory Grafana: folders, dashboards and the alerting provisioning API; ``requests`` records
    ``(method, path, json body)``; ``fail[(method, path regex)] = status`` makes a request fail."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.fail: dict[tuple[str, str], int] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.contact_points: dict[str, dict[str, Any]] = {}
        self.mute_timings: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, Any] = copy.deepcopy(DEFAULT_TREE)
        self.rules: dict[str, dict[str, Any]] = {}
        self.group_intervals: dict[tuple[str, str], int] = {}
        self._ids = 0

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] in WRITES]

    def _id(self) -> int:
        self._ids += 1
        return self._ids

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        for (m, pattern), status in self.fail.items():
            if m == method and re.fullmatch(pattern, path):
                return status, {"message": "stub failure", "traceID": "abc"}
        if (m := re.fullmatch(r"/api/folders/([\w-]+)", path)) and method == "GET":
            return (200, self.folders[m[1]]) if m[1] in self.folders else (404, {"message": "folder not found"})
        if path == "/api/folders" and method == "POST":
            self.folders[body["uid"]] = {"id": self._id(), "uid": body["uid"], "title": body["title"], "version": 1}
            return 200, self.folders[body["uid"]]
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            if m[1] not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            stored = self.dashboards[m[1]]
            return 200, {"dashboard": stored["dashboard"], "meta": {"folderUid": stored["folderUid"], "slug": "x"}}
        if path == "/api/dashboards/db" and method == "POST":
            dash = copy.deepcopy(body["dashboard"])
            old = self.dashboards.get(dash["uid"])
            dash["id"] = old["dashboard"]["id"] if old else self._id()
            dash["version"] = old["dashboard"]["version"] + 1 if old else 1
            self.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body.get("folderUid")}
            return 200, {"status": "success", "uid": dash["uid"], "version": dash["version"]}
        if path == "/api/v1/provisioning/contact-points":
            if method == "GET":
                return 200, list(self.contact_points.values())
            self.contact_points[body["uid"]] = {**body, "provenance": "api"}
            return 202, body
        if (m := re.fullmatch(r"/api/v1/provisioning/contact-points/([\w-]+)", path)) and method == "PUT":
            self.contact_points[m[1]] = {**body, "provenance": "api"}
            return 202, {"message": "contactpoint updated"}
        if path == "/api/v1/provisioning/mute-timings":
            if method == "GET":
                return 200, list(self.mute_timings.values())
            self.mute_timings[body["name"]] = {**body, "version": "1", "provenance": "api"}
            return 201, body
        if (m := re.fullmatch(r"/api/v1/provisioning/mute-timings/([\w-]+)", path)) and method == "PUT":
            self.mute_timings[m[1]] = {**body, "version": "2", "provenance": "api"}
            return 200, body
        if path == "/api/v1/provisioning/policies":
            if method == "GET":
                return 200, self.policies
            self.policies = {**copy.deepcopy(body), "provenance": "api"}
            return 202, {"message": "policies updated"}
        if m := re.fullmatch(r"/api/v1/provisioning/alert-rules/([\w-]+)", path):
            if method == "GET":
                return (200, self.rules[m[1]]) if m[1] in self.rules else (404, {"message": "rule not found"})
            self.rules[m[1]] = {**self.rules[m[1]], **body, "updated": "2026-01-02T00:00:00Z"}
            return 200, self.rules[m[1]]
        if path == "/api/v1/provisioning/alert-rules" and method == "POST":
            if body["folderUID"] not in self.folders:
                return 400, {"message": "folder does not exist"}
            self.rules[body["uid"]] = {**body, "id": self._id(), "provenance": "api",
                                       "updated": "2026-01-01T00:00:00Z"}
            self.group_intervals.setdefault((body["folderUID"], body["ruleGroup"]), 60)
            return 201, self.rules[body["uid"]]
        if m := re.fullmatch(r"/api/v1/provisioning/folder/([\w-]+)/rule-groups/([\w-]+)", path):
            key = (m[1], m[2])
            if method == "GET":
                if key not in self.group_intervals:
                    return 404, {"message": "rule group not found"}
                rules = [r for r in self.rules.values() if (r["folderUID"], r["ruleGroup"]) == key]
                return 200, {"title": m[2], "folderUid": m[1], "interval": self.group_intervals[key],
                             "rules": rules}
            self.group_intervals[key] = body["interval"]
            return 200, body
        return 404, {"message": f"stub has no {method} {path}"}


@pytest.fixture
def grafana() -> Iterator[tuple[StubGrafana, str]]:
    stub = StubGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body = json.loads(raw) if raw else None
            path = self.path.split("?")[0]
            stub.requests.append((self.command, path, body))
            auth = self.headers.get("Authorization", "")
            basic = "Basic " + base64.b64encode(b"admin:pw").decode()
            if auth not in (f"Bearer {TOKEN}", basic):
                status, answer = 401, {"message": "Unauthorized"}
            else:
                status, answer = stub.handle(self.command, path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield stub, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """Two small dashboards and the generated alerting files, as ``dashboards build`` lays them out."""
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    for uid, title in (("linewatch-overview", "linewatch / overview"), ("linewatch-asset", "linewatch / asset")):
        (dashboards / f"{uid}.json").write_text(json.dumps(
            {"uid": uid, "title": title, "schemaVersion": 39, "panels": [{"id": 1, "type": "stat", "title": "a"}]}))
    alerting.write_provisioning(dashboards)
    return dashboards, dashboards / "provisioning"


def _push(url: str, files: tuple[Path, Path], **kw: Any) -> dp.PushReport:
    return dp.push(url, TOKEN, *files, environ={"GRAFANA_ALERT_QUALITY_URL": "https://hooks.plant/q"}, **kw)


def test_first_push_creates_everything_and_the_second_changes_nothing(grafana, files):
    stub, url = grafana
    first = _push(url, files)
    assert {c.action for c in first.changes if c.kind != "policy-tree"} == {"created"}
    assert first.action("policy-tree", "root") == "updated"  # Grafana always has its default tree
    assert {(c.kind, c.key) for c in first.changes} >= {
        ("folder", "linewatch"), ("dashboard", "linewatch-overview"), ("dashboard", "linewatch-asset"),
        ("contact-point", "linewatch-quality-webhook"), ("mute-timing", alerting.PLANNED_MAINTENANCE.name),
        ("alert-rule", "linewatch-open-incident"), ("alert-rule", "linewatch-deadletter-burst"),
        ("rule-group", alerting.RULE_GROUP)}
    assert stub.dashboards["linewatch-asset"]["folderUid"] == "linewatch"
    assert stub.contact_points["linewatch-quality-webhook"]["settings"]["url"] == "https://hooks.plant/q"
    assert stub.contact_points["linewatch-ml-webhook"]["settings"]["url"].endswith(".example.invalid/linewatch-alerts")
    assert stub.policies["routes"][0]["object_matchers"] == [["route", "=", "maintenance"]]
    assert stub.rules["linewatch-open-incident"]["folderUID"] == "linewatch"
    assert stub.group_intervals[("linewatch", alerting.RULE_GROUP)] == 60
    # contact points and mute timings exist before the policy that names them
    paths = [p for m, p, _ in stub.writes()]
    assert paths.index("/api/v1/provisioning/policies") > max(
        i for i, p in enumerate(paths) if p.startswith(("/api/v1/provisioning/contact-points",
                                                         "/api/v1/provisioning/mute-timings")))
    written = len(stub.writes())
    second = _push(url, files)
    assert second.changed == [] and len(second.changes) == len(first.changes)
    assert len(stub.writes()) == written, stub.writes()[written:]
    assert "0 were created, 0 were updated" in second.summary()


def test_dry_run_sends_no_write_and_reports_what_would_change(grafana, files):
    stub, url = grafana
    report = _push(url, files, dry_run=True)
    assert stub.writes() == [] and stub.requests, "a dry run reads, and only reads"
    assert report.action("dashboard", "linewatch-overview") == "created"
    assert report.action("alert-rule", "linewatch-retrain-recommended") == "created"
    assert "would be created" in report.summary()
    _push(url, files)
    before = len(stub.requests)
    overview = files[0] / "linewatch-overview.json"
    overview.write_text(overview.read_text().replace('"title": "a"', '"title": "b"'))
    again = _push(url, files, dry_run=True)
    assert [w for w in stub.requests[before:] if w[0] in WRITES] == []
    assert [(c.kind, c.key, c.action) for c in again.changed] == [("dashboard", "linewatch-overview", "updated")]


def test_a_changed_dashboard_rule_or_interval_is_updated_alone(grafana, files):
    stub, url = grafana
    _push(url, files)
    overview = files[0] / "linewatch-overview.json"
    overview.write_text(overview.read_text().replace('"title": "a"', '"title": "b"'))
    alerting.write_provisioning(files[0], deadletter_burst=3)
    stub.group_intervals[("linewatch", alerting.RULE_GROUP)] = 300  # changed by hand on the server
    written = len(stub.writes())
    report = _push(url, files)
    assert sorted((c.kind, c.key, c.action) for c in report.changed) == [
        ("alert-rule", "linewatch-deadletter-burst", "updated"), ("dashboard", "linewatch-overview", "updated"),
        ("rule-group", alerting.RULE_GROUP, "updated")]
    assert [(m, p) for m, p, _ in stub.writes()[written:]] == [
        ("POST", "/api/dashboards/db"), ("PUT", "/api/v1/provisioning/alert-rules/linewatch-deadletter-burst"),
        ("PUT", f"/api/v1/provisioning/folder/linewatch/rule-groups/{alerting.RULE_GROUP}")]
    assert stub.dashboards["linewatch-overview"]["dashboard"]["panels"][0]["title"] == "b"
    assert stub.dashboards["linewatch-overview"]["dashboard"]["version"] == 2
    assert stub.group_intervals[("linewatch", alerting.RULE_GROUP)] == 60


def test_a_dashboard_moved_to_another_folder_is_moved_back(grafana, files):
    stub, url = grafana
    _push(url, files)
    stub.dashboards["linewatch-asset"]["folderUid"] = "someone-elses"
    assert _push(url, files).action("dashboard", "linewatch-asset") == "updated"
    assert stub.dashboards["linewatch-asset"]["folderUid"] == "linewatch"


def test_a_server_error_names_the_request_and_the_answer(grafana, files):
    stub, url = grafana
    stub.fail[("POST", "/api/v1/provisioning/alert-rules")] = 500
    with pytest.raises(dp.GrafanaPushError, match=r"answered 500 to create alert-rule linewatch-open-incident: "
                                                  r".*stub failure.*see its log"):
        _push(url, files)


def test_bad_credentials_and_no_server_say_what_to_do(grafana, files, tmp_path):
    _, url = grafana
    with pytest.raises(dp.GrafanaAuthError, match=r"answered 401 to read folder linewatch.*--token"):
        dp.push(url, "wrong", *files)
    assert dp.push(url, ("admin", "pw"), *files, dry_run=True).changes
    with pytest.raises(dp.GrafanaUnreachableError, match=r"no answer from Grafana.*--url"):
        dp.push("http://127.0.0.1:9", TOKEN, *files, timeout=2)
    with pytest.raises(dp.ConfigError, match="nothing to push"):
        dp.push(url, TOKEN, tmp_path / "empty", tmp_path / "empty")


def test_the_command_line_pushes_and_exits_non_zero_on_errors(grafana, files, monkeypatch):
    import typer

    from linewatch.cli.dashboards_push_cmd import push_cmd

    stub, url = grafana
    app = typer.Typer()
    app.command()(push_cmd)
    runner = CliRunner()
    monkeypatch.setenv("LINEWATCH_GRAFANA_TOKEN", TOKEN)
    args = ["--url", url, "--dashboards", str(files[0]), "--provisioning", str(files[1])]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would be created" in dry.output and "linewatch-open-incident" in dry.output and stub.writes() == []
    real = runner.invoke(app, args)
    assert real.exit_code == 0 and stub.writes(), real.output
    help_text = runner.invoke(app, ["--help"]).output
    assert "LINEWATCH_GRAFANA_URL" in help_text and "--dry-run" in help_text
    monkeypatch.setenv("LINEWATCH_GRAFANA_TOKEN", "wrong")
    denied = runner.invoke(app, args)
    assert denied.exit_code != 0 and "401" in str(denied.exception)

"""`linewatch labels`: the class list edited from the command line, and the counts an engineer reads."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.errors import ConfigError
from linewatch.simulation.confirmations import confirm_flagged
from tests.defects.test_label_store import _frames

pytestmark = pytest.mark.integration


def _ok(result):
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def test_labels_lists_ready_classes_and_edits_the_class_list(settings, database_url, tmp_path):
    sku = f"cli-{uuid.uuid4().hex[:6]}"
    env = {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    try:
        out = _ok(runner.invoke(app, ["labels", "class", "Scratch", "--synonym", "rub mark", "--synonym", "Scratches",
                                      "--route", "scrap", "--sku", sku], env=env)).output
        assert "class scratch" in out and "route scrap" in out and "rub_mark, scratches" in out
        bad = runner.invoke(app, ["labels", "class", "scratch", "--route", "bin", "--sku", sku], env=env)
        assert isinstance(bad.exception, ConfigError) and "rework, scrap, maintenance" in str(bad.exception)
        listed = _ok(runner.invoke(app, ["labels", "classes", "--sku", sku], env=env)).output
        assert sku in listed and "scrap" in listed
        with psycopg.connect(database_url) as conn:
            truth = _frames(conn, sku, ["scratch"] * 21 + ["spot"] * 3)
            conn.commit()
            confirm_flagged(conn, truth)
            conn.execute("UPDATE dispositions SET defect_class = 'RUB MARK' WHERE event_id = ANY(%s)",
                         ([e for e, c in truth.items() if c == "scratch"][:4],))
            conn.commit()
        out = _ok(runner.invoke(app, ["labels", "--sku", sku, "--json", str(tmp_path / "l.json")], env=env)).output
        assert "--from-labels --sku " + sku + " --modality frames" in " ".join(out.split())  # however rich wraps it
        doc = json.loads((tmp_path / "l.json").read_text())
        assert doc["min_examples"] == 20
        assert {(c["class"], c["examples"], c["ready"]) for c in doc["classes"]} == {("scratch", 21, True),
                                                                                   ("spot", 3, False)}
    finally:
        with psycopg.connect(database_url) as conn:
            conn.execute("DELETE FROM dispositions WHERE event_id IN (SELECT event_id FROM scores WHERE sku = %s)",
                         (sku,))
            for table in ("scores", "frame_features", "defect_classes"):
                conn.execute(f"DELETE FROM {table} WHERE sku = %s", (sku,))

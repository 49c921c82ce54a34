"""The embedded PostgreSQL is no open door: password logins only, a private password file, no root group.

The session's server (``stack``) is checked as it runs; the restart, recovery and upgrade paths
get their own data directories, since they stop and tamper with them.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from linewatch.embedded.postgres import (
    POSTGRES_BIN_PATH,
    EmbeddedPostgres,
    _prepare_for_system_user,
    _running_as_root,
)
from linewatch.embedded.process import run_as
from linewatch.errors import InfrastructureError

pytestmark = pytest.mark.integration


@pytest.fixture
def no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq would take a password from the environment or ~/.pgpass and hide a missing one."""
    for var in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)


def _with_password(url: str, password: str | None) -> str:
    info = conninfo_to_dict(url)
    info.pop("password", None)
    if password is not None:
        info["password"] = password
    return make_conninfo(**info)


def _refused(url: str) -> str:
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(url, connect_timeout=5).close()
    return str(e.value)


def _logs_in(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT current_user").fetchone() == ("postgres",)


def test_a_login_without_the_password_or_with_a_wrong_one_is_refused(stack, no_ambient_password):
    pg = stack.postgres
    assert pg is not None
    assert "password" in _refused(_with_password(pg.url, None))
    assert "password authentication failed" in _refused(_with_password(pg.url, "not-the-password"))
    assert "password authentication failed" in _refused(_with_password(pg.admin_url, "not-the-password"))
    assert _logs_in(pg.url) and _logs_in(stack.database_url)


def test_the_password_is_in_a_private_file_and_in_the_url(stack):
    pg = stack.postgres
    assert pg is not None
    assert stat.S_IMODE(pg.password_path.stat().st_mode) == 0o600
    assert pg.password_path.parent == Path(stack.settings.data_dir).resolve()
    assert f":{quote(pg.password, safe='')}@127.0.0.1:" in pg.url
    assert conninfo_to_dict(pg.url)["host"] == "127.0.0.1"


@pytest.mark.skipif(not _running_as_root(), reason="only a server started by root has root's ids to drop")
def test_the_server_keeps_neither_roots_user_nor_its_groups(stack):
    pg = stack.postgres
    assert pg is not None and pg.proc is not None
    server = psutil.Process(pg.proc.pid)
    for proc in [server, *server.children(recursive=True)]:  # the postmaster and its backends
        assert 0 not in (proc.uids().real, proc.uids().effective), proc
        assert 0 not in (proc.gids().real, proc.gids().effective, proc.gids().saved), proc
        groups = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("Groups:"))
        assert "0" not in groups.split()[1:], (proc, groups)


def test_the_password_survives_restarts_and_a_lost_or_wrong_file_is_handled(tmp_path, no_ambient_password):
    pg = EmbeddedPostgres(data_dir=tmp_path, fsync=False).start()
    try:
        first = pg.password
        assert _logs_in(pg.url)
    finally:
        pg.stop()

    pg = EmbeddedPostgres(data_dir=tmp_path, fsync=False).start()  # a restart reuses the password
    try:
        assert pg.password == first and _logs_in(pg.url)
    finally:
        pg.stop()

    pg.password_path.write_text("not-the-password\n")  # replaced by hand: said clearly, not a 60 s wait
    refused = EmbeddedPostgres(data_dir=tmp_path, fsync=False)
    with pytest.raises(InfrastructureError, match="refused the password"):
        refused.start()
    assert refused.proc is None  # the server it started is stopped again

    pg.password_path.unlink()  # lost: a new password is set offline, the data is kept
    pg = EmbeddedPostgres(data_dir=tmp_path, fsync=False).start()
    try:
        assert pg.password != first and _logs_in(pg.url)
        assert "password authentication failed" in _refused(_with_password(pg.url, first))
        assert stat.S_IMODE(pg.password_path.stat().st_mode) == 0o600
    finally:
        pg.stop()


def test_a_trust_data_directory_of_an_older_linewatch_gets_a_password(tmp_path, no_ambient_password):
    pgdata = (tmp_path / "postgres").resolve()
    pgdata.mkdir()
    user = _prepare_for_system_user(pgdata) if _running_as_root() else None
    subprocess.run([str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8",
                    "--locale=C", "-U", "postgres"], capture_output=True, check=True, **run_as(user))

    pg = EmbeddedPostgres(data_dir=tmp_path, fsync=False).start()
    try:
        hba = (pgdata / "pg_hba.conf").read_text()
        assert "scram-sha-256" in hba and not any(
            "trust" in line.partition("#")[0].split() for line in hba.splitlines())
        assert _logs_in(pg.url)
        assert "password" in _refused(_with_password(pg.url, None))
    finally:
        pg.stop()

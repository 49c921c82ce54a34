"""Session fixture: a real TimescaleDB (PGlite + TimescaleDB 2.23 in Node) with every migration applied.

One Node process per test session (~3-4 s to start from the cached initdb snapshot, ~3 s to
apply ``sql/``), shared by the tests; each test isolates itself with its own asset ids. Skips,
with the reason, where Node or npm is missing or the package cannot be installed (offline).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.timescale_harness import TimescaleDB, TimescaleUnavailable, timescale_migrations


@pytest.fixture(scope="session")
def timescale_db() -> Iterator[TimescaleDB]:
    try:
        db = TimescaleDB.start()
    except TimescaleUnavailable as e:
        pytest.skip(f"no TimescaleDB here: {e}")
    with db:
        db.apply(timescale_migrations())
        yield db

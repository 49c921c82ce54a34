"""One way to open an ad-hoc PostgreSQL connection, for code that runs a query and leaves.

The writer and the model registry keep their own long-lived connections; commands and data
loaders that read once (a user's training query, say) call :func:`connect` instead of
importing psycopg themselves, so connection options have one home. psycopg's errors are left
as they are: what a failed connection means (a bad query? a database that is down?) is the
caller's to say.
"""

from __future__ import annotations

from typing import Any

import psycopg


def connect(url: str, **options: Any) -> psycopg.Connection:
    """A new connection to ``url`` (a context manager: commits and closes on exit); ``options`` go to psycopg."""
    return psycopg.connect(url, **options)

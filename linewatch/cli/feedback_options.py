"""What the operator-facing commands share: who is acting, and times given on the command line.

Read here, at the command's start (the CLI is the composition root): the library modules below
take the operator's name and aware datetimes as arguments.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from linewatch.errors import ConfigError

#: The environment variable naming the operator (a shared terminal on the line sets it per login).
OPERATOR_ENV = "LINEWATCH_OPERATOR"

ActorOption = Annotated[str | None, typer.Option(
    "--actor", help=f"who is doing it (default: ${OPERATOR_ENV}, else the login name)")]
SinceOption = Annotated[str | None, typer.Option(
    help="only from this time on: ISO 8601 with a zone (2026-01-01T06:00:00Z), or e.g. 8h, 3d")]


def operator_name(given: str | None) -> str:
    """``given``, else ``$LINEWATCH_OPERATOR``, else the login name."""
    name = given or os.environ.get(OPERATOR_ENV) or getpass.getuser()
    if not name.strip():
        raise ConfigError(f"no operator name: pass --actor/--operator or set {OPERATOR_ENV}")
    return name.strip()


_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_time(text: str | None, option: str) -> datetime | None:
    """An aware UTC datetime from ISO 8601 (``Z`` allowed) or a look-back like ``8h``; None stays None."""
    if text is None:
        return None
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give an ISO 8601 time such as 2026-01-01T06:00:00Z, "
                          "or a look-back such as 8h or 3d") from None
    if value.tzinfo is None:
        raise ConfigError(f"{option} {text!r} has no time zone; add one, e.g. {text}Z for UTC")
    return value.astimezone(UTC)

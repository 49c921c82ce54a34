"""Where the SQL migrations and dashboards are, installed or in a checkout.

The wheel carries them under ``linewatch/_data``; an editable install or a checkout reads
them from the repository root, so a developer's edit is live without reinstalling.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """The ``sql`` or ``dashboards`` directory, whichever layout this install has."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"linewatch's {name}/ directory is missing from this install; reinstall with `pip install linewatch`"
    )

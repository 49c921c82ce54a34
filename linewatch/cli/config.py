"""``linewatch config``: the settings every other command would run with, and where each part runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from linewatch.cli.common import ConfigOption, settings


def config_cmd(config: ConfigOption = None) -> None:
    """Print the effective configuration (secrets masked) and where each part runs."""
    s = settings(config)
    table = Table(title="linewatch configuration", show_header=True)
    table.add_column("setting")
    table.add_column("value")
    for key, value in s.masked().items():
        # Only an unset broker or database URL means "embedded"; other unset values are just unset.
        unset = "(embedded)" if key in ("broker_url", "database_url") else "(unset)"
        table.add_row(key, unset if value is None else str(value))
    Console().print(table)

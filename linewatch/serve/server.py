"""Run the inspection API on uvicorn, refusing an open bind without keys.

Why uvicorn and not Faust's own web server: a Faust worker's web views share one event loop with
its agents and their consumer heartbeats, so a burst of HTTP requests would delay the stream (and
a long batch the verdicts). The API is its own process with its own loop and scoring threads;
it needs the models and the broker, not the worker.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

from linewatch.config import Settings
from linewatch.errors import ConfigError
from linewatch.serve.guard import access_log, parse_keys

#: Seconds an idle keep-alive connection stays open: a camera station keeps one open between parts.
KEEP_ALIVE_S = 30


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to listen beyond loopback without an API key (an open inspection endpoint moves charts)."""
    keys = parse_keys(settings.serve_api_keys.get_secret_value() if settings.serve_api_keys else None)
    if not is_loopback(host) and not keys:
        raise ConfigError(
            f"refusing to serve on {host} without an API key: anyone who reaches it could feed the charts. Set "
            "LINEWATCH_SERVE_API_KEYS (or serve_api_keys in the config file) to one or more comma-separated keys, "
            "or bind 127.0.0.1")


def configure_access_log() -> None:
    """Access-log lines (JSON, one per request) go to stdout as they are, nothing added around them."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


def uvicorn_server(app: object, *, host: str, port: int, log_level: str = "warning") -> object:
    """A ``uvicorn.Server`` for ``app`` (``run()`` blocks; it stops on SIGINT/SIGTERM in the main thread)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                            timeout_keep_alive=KEEP_ALIVE_S, log_level=log_level, server_header=False)
    return uvicorn.Server(config)

"""Child processes that cannot outlive linewatch.

Every service is started with ``PR_SET_PDEATHSIG`` (Linux), so even a ``kill -9`` of the
parent takes the child down; a normal exit or Ctrl-C terminates it politely first and kills
it if it does not stop in time. Readiness is a real check (a TCP connect, a query), never a
sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from linewatch.errors import InfrastructureError
from linewatch.lifecycle import set_parent_death_signal


def die_with_parent() -> None:
    """A ``preexec_fn``: runs in the child between fork and exec, so it gets SIGTERM when we die."""
    set_parent_death_signal(signal.SIGTERM)


def run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with that user's groups only.

    Why: ``subprocess``'s ``user=`` changes the user id alone, so a child started by root keeps
    group 0 and root's supplementary groups, and can open whatever is group-readable by root.
    The child gets the user's primary group and the groups it is a member of instead. Nothing
    changes for ``None`` or when we are not root (then only our own user is possible anyway).
    """
    if user is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return {"user": user} if user is not None else {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(user, entry.pw_gid)}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start a child that dies with us, its output appended to ``log_path`` (as ``user``: :func:`run_as`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            **run_as(user),
            preexec_fn=die_with_parent,
        )
    except OSError as e:
        raise InfrastructureError(f"could not start {argv[0]}: {e}") from e
    finally:
        log.close()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen,
               log_path: Path) -> None:
    """Poll ``check`` until it passes; fail with the log's tail if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfrastructureError(f"{what} exited with code {proc.returncode}:\n{tail(log_path)}")
        if check():
            return
        time.sleep(0.05)
    stop(proc)
    raise InfrastructureError(f"{what} was not ready after {timeout:.0f} s; its log says:\n{tail(log_path)}")


def stop(proc: subprocess.Popen | None, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask politely, then insist; never leaves the process behind."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

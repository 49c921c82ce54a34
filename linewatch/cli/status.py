"""``linewatch status``: ask one or more workers' ``/health`` how they are doing, for a person or a script.

It only speaks HTTP to the workers (:mod:`linewatch.streams.health` serves the document), so it
needs neither a broker nor a database, and imports neither Faust nor the detectors. The exit code
is the verdict: 0 when every worker answered and none is failing, 1 otherwise (with a line per
problem saying what to check), so ``linewatch status --url ... --json`` also works as a probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from linewatch.cli.common import ConfigOption, console, settings
from linewatch.errors import ConfigError, LinewatchError
from linewatch.lifecycle import HEALTH_PATH, HEALTH_URL_MESSAGE, group_health_ports, health_url, worker_processes

#: Colour of each agent status on screen.
STATUS_STYLE = {"ok": "green", "starting": "cyan", "retrying": "yellow", "unresponsive": "red", "down": "bold red"}


@dataclass
class WorkerAnswer:
    """What one worker said: its HTTP status and ``/health`` document, or why there is none."""

    url: str
    http_status: int | None = None
    health: dict[str, Any] | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.error is None and self.health is not None and bool(self.health.get("healthy"))

    def problems(self) -> list[str]:
        """One line per reason this worker is not healthy (empty when it is)."""
        if self.error is not None:
            return [f"{self.url}: {self.error}"]
        assert self.health is not None
        out = []
        for name, agent in self.health.get("agents", {}).items():
            if agent.get("status") in ("down", "unresponsive"):
                why = agent.get("error") or (
                    "its database writer gave up; check LINEWATCH_DATABASE_URL and that the server is up"
                    if agent.get("status") == "down" else "its runtime did not answer")
                out.append(f"{self.url}: {name} agent {agent['status']}: {why}")
        if not out and not self.healthy:
            out.append(f"{self.url}: answered HTTP {self.http_status}, status {self.health.get('status')}")
        return out

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "healthy": self.healthy, "http_status": self.http_status, "health": self.health,
                "error": self.error}


def normalize_url(url: str) -> str:
    """``host:port``, ``http://host:port`` or a full URL -> the URL of ``/health`` on it.

    >>> normalize_url("10.0.0.5:6066"), normalize_url("http://w1:7000/"), normalize_url("http://w1:7000/health")
    ('http://10.0.0.5:6066/health', 'http://w1:7000/health', 'http://w1:7000/health')
    """
    if "://" not in url:
        url = f"http://{url}"
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}{'/' + path.rstrip('/') if path.strip('/') else HEALTH_PATH}"


def fetch(url: str, timeout: float) -> WorkerAnswer:
    """GET ``url`` and read its JSON; a 503 still carries the document (it says which agent fails)."""
    import json
    import urllib.error
    import urllib.request

    hint = (f"check that a worker runs there and listens on that port (each worker logs its URL on a "
            f"{HEALTH_URL_MESSAGE!r} line; LINEWATCH_HEALTH_HOST and LINEWATCH_HEALTH_PORT set it)")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except TimeoutError:
        return WorkerAnswer(url, error=f"no answer within {timeout:g} s; {hint}")
    except urllib.error.URLError as e:
        return WorkerAnswer(url, error=f"no answer ({e.reason}); {hint}")
    except (OSError, ValueError) as e:
        return WorkerAnswer(url, error=f"no answer ({e}); {hint}")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "agents" not in document:
        return WorkerAnswer(url, http_status=status,
                            error=f"answered HTTP {status} without a linewatch health document; "
                                  "is this a linewatch worker's port?")
    return WorkerAnswer(url, http_status=status, health=document)


def render(answers: list[WorkerAnswer]) -> None:
    """Print each worker's report as rich tables on stdout (problems go to the console on stderr)."""
    from rich.console import Console
    from rich.table import Table

    out = Console()
    for answer in answers:
        if answer.health is None:
            out.print(f"[bold]{answer.url}[/]: [red]no answer[/]")
            continue
        h = answer.health
        status = h.get("status", "?")
        out.print(f"[bold]{answer.url}[/]: [{STATUS_STYLE.get(status, 'red')}]{status}[/] "
                  f"(HTTP {answer.http_status}; app {h.get('app_id')}, pid {h.get('pid')}, "
                  f"up {_duration(h.get('uptime_s'))})")
        if h.get("lag_error"):
            out.print(f"  [yellow]lag: {h['lag_error']}[/]")
        agents: dict[str, Any] = h.get("agents", {})
        table = Table(title="agents", title_justify="left")
        for col in ("agent", "status", "sink", "processed", "batches", "last batch", "lag", "dead letters", "models"):
            table.add_column(col, justify="right" if col in ("processed", "batches", "lag", "dead letters",
                                                             "models") else "left")
        for name, a in agents.items():
            style = STATUS_STYLE.get(a.get("status"), "red")
            sink = a.get("sink")
            table.add_row(name, f"[{style}]{a.get('status')}[/]", f"[{STATUS_STYLE.get(sink, 'red')}]{sink}[/]",
                          f"{a.get('processed', 0)} {a.get('unit') or ''}".strip(), str(a.get("batches", 0)),
                          "never" if a.get("last_batch_age_s") is None else f"{_duration(a['last_batch_age_s'])} ago",
                          _cell(a.get("lag")), str(a.get("deadletters", 0)), str(len(a.get("models", {}))))
        out.print(table)
        for name, a in agents.items():
            if a.get("error"):
                out.print(f"  [red]{name}: {a['error']}[/]")
        parts = Table(title="lag per partition", title_justify="left")
        for col in ("agent", "topic", "partition", "committed", "high watermark", "lag"):
            parts.add_column(col, justify="left" if col in ("agent", "topic") else "right")
        for name, a in agents.items():
            for p in a.get("partitions", []):
                parts.add_row(name, a.get("topic", ""), str(p.get("partition")), _cell(p.get("committed")),
                              _cell(p.get("high_watermark")), _cell(p.get("lag")))
        if parts.row_count:
            out.print(parts)
        else:
            out.print("  no partitions assigned to this worker")
        dead = Table(title="dead letters by reason", title_justify="left")
        dead.add_column("agent")
        dead.add_column("reason (first 80 characters)")
        dead.add_column("count", justify="right")
        for name, a in agents.items():
            for reason, n in sorted(a.get("deadletters_by_reason", {}).items(), key=lambda kv: -kv[1]):
                dead.add_row(name, reason, str(n))
        if dead.row_count:
            out.print(dead)
        models = Table(title="models loaded", title_justify="left")
        models.add_column("agent")
        models.add_column("model")
        models.add_column("version")
        for name, a in agents.items():
            for model_id, version in sorted(a.get("models", {}).items()):
                models.add_row(name, model_id, str(version))
        if models.row_count:
            out.print(models)
        else:
            out.print("  no models loaded (train one: `linewatch train ...`)")


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "n/a"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def status_cmd(
    url: Annotated[list[str] | None, typer.Option(
        "--url", metavar="URL", help="a worker's health URL (or host:port); repeat for several workers "
                                     "(default: LINEWATCH_HEALTH_HOST and LINEWATCH_HEALTH_PORT on this host)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the workers' /health documents as JSON")] = False,
    processes: Annotated[int | None, typer.Option(
        "--processes", min=0, metavar="N",
        help="without --url: ask the N workers of a `linewatch worker --processes N` group, on "
        "LINEWATCH_HEALTH_PORT + 0 .. N-1 (default: LINEWATCH_WORKER_PROCESSES, 0 = one per two cores, as the worker)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each worker", min=0.1)] = 5.0,
    config: ConfigOption = None,
) -> None:
    """Show workers' health: lag per partition, sink state, dead letters by reason, models.

    Exits 0 when every worker answers and none has a sink down, 1 otherwise.
    """
    import json
    from concurrent.futures import ThreadPoolExecutor

    if url:
        urls = [normalize_url(u) for u in url]
    else:
        s = settings(config)
        if s.health_port == 0:
            raise ConfigError(
                "LINEWATCH_HEALTH_PORT is 0, so each worker picks its port at start: pass --url with the URL "
                f"its log gives on the {HEALTH_URL_MESSAGE!r} line"
            )
        ports = group_health_ports(s.health_port, worker_processes(s.worker_processes if processes is None
                                                                   else processes))
        urls = [health_url(s.health_host, p) for p in ports]
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        answers = list(pool.map(lambda u: fetch(u, timeout), urls))
    if as_json:
        print(json.dumps({"healthy": all(a.healthy for a in answers), "workers": [a.as_json() for a in answers]},
                         indent=2))
    else:
        render(answers)
    problems = [p for a in answers for p in a.problems()]
    if problems:
        for p in problems[:-1]:
            console.print(f"[red]error:[/] {p}")
        raise LinewatchError(problems[-1] if len(problems) == 1 else
                             f"{problems[-1]}\n({sum(not a.healthy for a in answers)} of {len(answers)} "
                             "worker(s) not healthy)")

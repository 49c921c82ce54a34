"""The services a command needs: embedded where no URL is configured, external otherwise.

Used as a context manager so Ctrl-C, an error or a normal exit all stop what was started,
in reverse order.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

from linewatch.config import Settings
from linewatch.embedded.broker import EmbeddedBroker
from linewatch.embedded.postgres import EmbeddedPostgres


@dataclass
class Stack:
    """Resolved endpoints plus whatever embedded processes back them."""

    settings: Settings
    fsync: bool = True
    need_broker: bool = True
    need_database: bool = True
    bootstrap: str = ""
    database_url: str = ""
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    _exit: ExitStack = field(default_factory=ExitStack, repr=False)

    def __enter__(self) -> Stack:
        try:
            s = self.settings
            if s.embedded_broker and self.need_broker:
                self.broker = EmbeddedBroker(data_dir=s.data_dir).start()
                self._exit.callback(self.broker.stop)
                self.bootstrap = self.broker.bootstrap
            elif s.broker_url:
                self.bootstrap = s.broker_url.removeprefix("kafka://")  # type: ignore[union-attr]
            if s.embedded_database and self.need_database:
                self.postgres = EmbeddedPostgres(data_dir=s.data_dir, fsync=self.fsync).start()
                self._exit.callback(self.postgres.stop)
                self.database_url = self.postgres.url
            elif s.database_url:
                self.database_url = s.database_url.get_secret_value()  # type: ignore[union-attr]
        except BaseException:
            self._exit.close()
            raise
        return self

    @property
    def kafka_security(self) -> dict[str, str]:
        """The librdkafka TLS/SASL properties for :attr:`bootstrap` (none for the embedded broker).

        Why here: commands hold the stack, and every client they open must use the same
        credentials (:meth:`~linewatch.config.Settings.kafka_client_config`).
        """
        return {} if self.broker is not None else self.settings.kafka_client_config()

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def close(self) -> None:
        self._exit.close()

"""The bare Faust limit: consume N messages with ``take_events`` and do nothing else.

Run as its own process (Faust owns its event loop): ``python -m linewatch.benchmarks.bare_faust
--bootstrap HOST:PORT --topic spc --n 50000 --out result.json``. It uses the worker's own Faust
settings, so the only difference from the real agent is the work per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path

import faust
from faust.worker import Worker

from linewatch.config import Settings
from linewatch.streams.app import new_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="spc")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--batch", type=int, default=Settings().batch_size)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    settings = Settings(broker_url=args.bootstrap, database_url="postgresql://unused/x", batch_size=args.batch,
                        data_dir=args.out.parent / "bare-faust", app_id=f"bare-faust-{uuid.uuid4().hex[:8]}")
    app = new_app(settings, args.bootstrap)
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state: dict[str, float | int | None] = {"n": 0, "first": None, "first_batch": 0}
    started = time.monotonic()

    @app.agent(topic)
    async def consume(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            if state["first"] is None:
                # Steady state is measured from the end of the first batch, as in the e2e figure.
                state["first"], state["first_batch"] = time.monotonic(), len(events)
            state["n"] += len(events)
            if state["n"] >= args.n:
                elapsed = time.monotonic() - state["first"]
                counted = state["n"] - state["first_batch"]
                args.out.write_text(json.dumps({
                    "messages": state["n"], "seconds": elapsed, "per_s": counted / max(elapsed, 1e-9),
                    "join_s": state["first"] - started,
                }))
                os._exit(0)

    Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()

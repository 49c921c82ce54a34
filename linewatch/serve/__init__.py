"""``linewatch serve``: the synchronous inspection API for reject gates (score one part now, over HTTP).

The service scores with the worker's own batch functions and model registry, answers with the
verdict at once, and publishes every inspected event to its input topic through an on-disk spool,
so the worker stores it like any other. See ``docs/api.md``.

- :mod:`.spool`: the bounded, fsync'd on-disk spool and the forwarder that drains it to Kafka;
- :mod:`.lanes`: one scoring thread per modality, batching the requests that wait;
- :mod:`.requests`: request bodies -> the raw messages a producer would send; results -> verdicts;
- :mod:`.service`: the lanes, spool and models of one running service;
- :mod:`.http`: the FastAPI application (routes, auth, limits, access log);
- :mod:`.server`: binding checks and uvicorn.
"""

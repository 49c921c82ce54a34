"""Turn simulations and recordings into Kafka messages: SPC parts, sensor windows, camera frames.

What a plant's gateways would send, for the demo, the benchmarks and ``linewatch simulate``.
Producers publish through :mod:`linewatch.kafka` and never import the Faust worker
(:mod:`linewatch.streams`), so producing needs neither Faust nor a database.
"""

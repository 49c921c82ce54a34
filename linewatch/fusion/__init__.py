"""Fusion: per-asset incidents from calibrated scores of every modality (pure: no Kafka, no database).

:mod:`.combine` combines tail probabilities, :mod:`.units` groups an asset's scores into the
units that are tested (a part with everything known about it, or a signals frame),
:mod:`.lifecycle` turns unit verdicts into one alert per asset with hysteresis, and
:mod:`.engine` ties them together for the live agent, replay and the benchmarks alike.
"""

"""The Faust app, its agents, producers, sinks, replay and simulators."""

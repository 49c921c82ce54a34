"""Simulated plants with labelled faults: ground truth for demos, tests and benchmarks."""

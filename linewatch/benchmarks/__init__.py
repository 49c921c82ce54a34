"""Benchmarks shipped with linewatch so `linewatch bench ...` works from an installed package."""

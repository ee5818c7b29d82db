"""Benchmark programs and the helpers they share: each prints figures beside a baseline."""

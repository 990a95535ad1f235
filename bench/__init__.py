"""Benchmarks: each stage's throughput against a reference implementation and a hardware bound."""

"""Benchmarks and the offline testbed: `bench/perf.py` (performance), `bench/testbed/` (scaling)."""

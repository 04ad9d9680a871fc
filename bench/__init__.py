"""Benchmarks: `python -m bench <name> [--quick]`, each printing a table.

Speed and memory are measured here, never asserted in tests: timing assertions are flaky on
shared 2-core machines, while a benchmark run prints numbers a person can compare with the
targets in docs/ARCHITECTURE.md#performance-targets.
"""

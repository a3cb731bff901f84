"""Benchmarks: run from the repository root, e.g. ``python bench/bench_scan.py``.

Figures and the commands that produced them live in ``docs/benchmarks.md``.
"""

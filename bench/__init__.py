"""Benchmark scripts; `python -m bench` runs them all (bench/run_all.py)."""

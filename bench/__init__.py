"""Benchmarks (not tests): `python -m bench` runs them all and writes bench/results/latest.md."""

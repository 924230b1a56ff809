"""Benchmarks (not tests): `python -m bench` runs them all and writes bench/results/latest.md."""

import time
from collections.abc import Callable


def call_times(fn: Callable[[int], object], n: int, unit_s: float = 1e-3) -> list[float]:
    """The time of each of `n` calls `fn(0)` … `fn(n - 1)`, in units of `unit_s` seconds."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) / unit_s)
    return out

"""Thread counts: one scoped count, for libraries that keep theirs in a global (torch, FAISS's
OpenMP), and how many encoder threads to run."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor


@contextlib.contextmanager
def one_thread(get: Callable[[], int], set_to: Callable[[int], None], enabled: bool = True) -> Iterator[None]:
    """The library whose count `get` reads and `set_to` writes runs on one thread inside the
    block (when `enabled`); its previous count is restored after. Callers serialise the block."""
    if not enabled:
        yield
        return
    before = get()
    if before == 1:
        yield
        return
    set_to(1)
    try:
        yield
    finally:
        set_to(before)


def default_workers() -> int:
    """Encoder threads when none are asked for: one a core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class RoundRobin:
    """Items 0..count-1 dealt to `workers` threads, worker k getting k, k + n, k + 2n, ... (so
    each gets items of every length). Worker 0 is the calling thread, the others come from a
    pool made on first use. For encoders that run each text alone and call onnxruntime, whose
    `run` releases the GIL."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self._name = workers, name
        self._pool: ThreadPoolExecutor | None = None
        self._made = threading.Lock()

    def run(self, count: int, work: Callable[[int, range], None]) -> None:
        """`work(k, items)` for each worker k, at once; returns when all are done (re-raising
        the first error)."""
        n = min(self.workers, count)
        if n <= 1:
            work(0, range(count))
            return
        with self._made:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix=self._name)
        futures = [self._pool.submit(work, k, range(k, count, n)) for k in range(1, n)]
        work(0, range(0, count, n))
        for f in futures:
            f.result()

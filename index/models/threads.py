"""Thread counts: one scoped count, for libraries that keep theirs in a global (torch, FAISS's
OpenMP), and how many encoder threads to run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


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

"""One scoped thread count, for libraries that keep theirs in a global (torch, FAISS's OpenMP)."""

from __future__ import annotations

import contextlib
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

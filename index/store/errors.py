"""Errors of the store, in a module of their own so every backend can raise them without
importing the snapshot code that loads it."""

from __future__ import annotations


class SnapshotError(Exception):
    """A snapshot that cannot be used."""


class SnapshotNotFound(SnapshotError):
    pass


class SnapshotMismatchError(SnapshotError):
    """The snapshot was built with another embedding model or dimension."""


class SnapshotUnavailable(SnapshotError):
    """The snapshot is fine but the store holding its vectors cannot be reached now; try again."""


__all__ = ["SnapshotError", "SnapshotMismatchError", "SnapshotNotFound", "SnapshotUnavailable"]

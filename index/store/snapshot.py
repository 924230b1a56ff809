"""Snapshots: everything a query needs, in one directory that is written aside and renamed into place.

Layout of an index directory::

    index_dir/
      CURRENT                 name of the live snapshot (replaced atomically)
      snap-<time>-<rand>/     manifest.json tree.json vectors.faiss bm25/ sentences.npz
                              (Milvus backend: vector_ids.npy instead of vectors.faiss)
      .tmp-<pid>-<rand>/      a snapshot being written (never loaded)

A snapshot is complete once it has been renamed from `.tmp-*`; `CURRENT` is
switched only after that, by `os.replace`, so a reader sees the old snapshot
or the new one and never a partial one, whenever the writer dies.

The manifest's `backend` says where leaf vectors are: "faiss" (the file in the snapshot,
the default) or "milvus" (rows of a shared collection, see index.store.milvus for how a
snapshot stays immutable there). The snapshot knows vector stores only through the
`VectorIndex` protocol and `index.store.backends`, which alone names the backends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from index.store import backends
from index.store.errors import (  # noqa: F401 (re-exported: the snapshot's errors)
    SnapshotError,
    SnapshotMismatchError,
    SnapshotNotFound,
    SnapshotUnavailable,
)
from index.store.lexical import BM25Index
from index.store.sentences import SentenceStore
from index.store.tree import NodeTree
from index.store.vectors import VectorIndex

if TYPE_CHECKING:
    from index.config import IndexConfig

FORMAT_VERSION = 2  # 2: vector ids hash the node id; sentences continue over lower-case lines
CURRENT = "CURRENT"
KEEP_SNAPSHOTS = 3


@dataclass
class FileEntry:
    sha256: str
    size: int
    nodes: int
    indexed_at: float | None = None  # when this content was chunked (None: a snapshot from before it was kept)


@dataclass
class Manifest:
    model: str
    dim: int
    chunk_sizes: list[int]
    chunk_overlap: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    index_kind: str = "flat"
    nodes: int = 0
    leaves: int = 0
    sentences: int = 0
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    backend: str = "faiss"  # where leaf vectors are: "faiss" or "milvus"
    # the folders ingested (resolved); a file's public path is relative to the one holding it
    roots: list[str] = field(default_factory=list)
    embedder_backend: str = ""  # how the leaves were embedded: "torch", "onnx-int8", ... ("" before it was recorded)
    vector_store: dict[str, str] = field(default_factory=dict)  # milvus: URI (no secret), collection

    def to_json(self) -> str:
        d = asdict(self)
        if self.backend == "faiss":  # FAISS manifests stay as they were, readable by older builds
            del d["backend"], d["vector_store"]
        if not self.embedder_backend:
            del d["embedder_backend"]
        if not self.roots:
            del d["roots"]
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        if d.get("format_version") != FORMAT_VERSION:
            raise SnapshotError(
                f"snapshot format version {d.get('format_version')} is not supported "
                f"(this build reads version {FORMAT_VERSION}); re-ingest to rebuild it"
            )
        d["files"] = {k: FileEntry(**v) for k, v in d.get("files", {}).items()}
        return cls(**d)


@dataclass
class Snapshot:
    path: Path
    manifest: Manifest
    tree: NodeTree
    vectors: VectorIndex
    lexical: BM25Index
    sentences: SentenceStore

    @property
    def version(self) -> str:
        return self.path.name

    def check_embedder(self, model: str, dim: int) -> None:
        check_compatible(self.manifest, model, dim, self.path)

    def public_path(self, source: str, corpus_root: str | Path | None = None) -> str:
        """`source` (a resolved path on this host) as callers see it; see `public_path`."""
        return public_path(source, self.manifest.roots, corpus_root)


def public_path(source: str, roots: list[str], corpus_root: str | Path | None = None) -> str:
    """A source file's path as callers see it, never an absolute path of this host: relative
    to `corpus_root` when it lies there (what `POST /v1/ingest` paths are relative to), else
    to the deepest ingested root that holds it (a file ingested by name: its name), else its
    file name. A URL (a page of an ingested site) is returned as it is."""
    if "://" in source:
        return source
    path = Path(source)
    candidates = [Path(corpus_root).resolve()] if corpus_root is not None else []
    candidates += sorted((Path(r) for r in roots), key=lambda r: len(r.parts), reverse=True)
    for root in candidates:
        if path == root:
            return path.name
        if root in path.parents:
            return path.relative_to(root).as_posix()
    return path.name


def check_compatible(manifest: Manifest, model: str, dim: int, where: Path | str) -> None:
    if manifest.model != model or manifest.dim != dim:
        raise SnapshotMismatchError(
            f"snapshot {where} was built with model {manifest.model!r} (dim {manifest.dim}), "
            f"but the configured embedder is {model!r} (dim {dim}); "
            "configure the same model or re-ingest with --rebuild"
        )


def current_path(index_dir: Path) -> Path | None:
    """The live snapshot directory, or None when there is none yet."""
    index_dir = Path(index_dir)
    try:
        name = (index_dir / CURRENT).read_text().strip()
    except FileNotFoundError:
        # a bare snapshot directory (copied out of an index dir) loads as it is
        return index_dir if (index_dir / "manifest.json").exists() else None
    if not name or "/" in name or name.startswith("."):
        raise SnapshotError(f"{index_dir / CURRENT} names no valid snapshot: {name!r}")
    path = index_dir / name
    if not (path / "manifest.json").exists():
        raise SnapshotError(f"{index_dir / CURRENT} names {name}, which holds no manifest.json")
    return path


def read_manifest(index_dir: Path) -> Manifest | None:
    path = current_path(index_dir)
    return None if path is None else Manifest.from_json((path / "manifest.json").read_text())


def load_snapshot(index_dir: Path, model: str | None = None, dim: int | None = None, *,
                  config: IndexConfig | None = None) -> Snapshot:
    """Load the live snapshot; with `model`/`dim` given, refuse one built with another embedder.

    `config` says how to reach a Milvus snapshot's vectors (URI, token); FAISS needs nothing.
    """
    path = current_path(Path(index_dir))
    if path is None:
        raise SnapshotNotFound(f"no index in {index_dir}: run `notesrag ingest PATH --index-dir {index_dir}`")
    manifest = Manifest.from_json((path / "manifest.json").read_text())
    if model is not None or dim is not None:
        check_compatible(manifest, model or manifest.model, dim or manifest.dim, path)
    tree = NodeTree.from_records(json.loads((path / "tree.json").read_text(encoding="utf-8")))
    vectors = backends.load_vectors(path, manifest.backend, manifest.vector_store, manifest.dim, config)
    lexical = BM25Index.load(path / "bm25")
    sentences = SentenceStore.load(path / "sentences.npz")
    return Snapshot(path, manifest, tree, vectors, lexical, sentences)


def write_snapshot(index_dir: Path, manifest: Manifest, tree: NodeTree, vectors: VectorIndex,
                   lexical: BM25Index, sentences: SentenceStore) -> Path:
    """Write a complete snapshot aside, fsync it, rename it into place, then switch CURRENT."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    tmp = index_dir / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        manifest.created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (tmp / "tree.json").write_text(json.dumps(tree.to_records(), ensure_ascii=False), encoding="utf-8")
        manifest.backend = vectors.backend
        manifest.vector_store = backends.save_vectors(vectors, tmp)
        lexical.save(tmp / "bm25")
        sentences.save(tmp / "sentences.npz")
        # the manifest last: a directory with a manifest is a finished one
        (tmp / "manifest.json").write_text(manifest.to_json())
        _fsync_tree(tmp)
        final = index_dir / f"snap-{stamp}-{secrets.token_hex(4)}"
        os.rename(tmp, final)
        _fsync_dir(index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = index_dir / f".{CURRENT}.{os.getpid()}.tmp"
    with open(pointer, "w") as f:
        f.write(final.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, index_dir / CURRENT)
    _fsync_dir(index_dir)
    backends.prune_after_switch(index_dir, vectors, prune)
    return final


def prune(index_dir: Path, keep: int = KEEP_SNAPSHOTS,
          on_remove: Callable[[Path], None] | None = None) -> None:
    """Remove old snapshots (keeping the newest `keep`, the live one always) and dead writers' temp dirs.

    `on_remove` sees each snapshot directory just before it goes.
    """
    live = current_path(index_dir)
    snaps = sorted((p for p in index_dir.glob("snap-*") if p.is_dir()), key=_age)
    for old in snaps[:-keep] if keep else snaps:
        if live is None or old.resolve() != live.resolve():
            if on_remove is not None:
                on_remove(old)
            shutil.rmtree(old, ignore_errors=True)
    for tmp in index_dir.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
    for stale in index_dir.glob(f".{CURRENT}.*.tmp"):
        with contextlib.suppress(ValueError, IndexError):
            if not _alive(int(stale.name.split(".")[2])):
                stale.unlink(missing_ok=True)


def _age(path: Path) -> tuple[float, str]:
    try:
        return (path.stat().st_mtime, path.name)
    except FileNotFoundError:
        return (0.0, path.name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def manifest_dict(snapshot: Snapshot) -> dict[str, Any]:
    """What the service reports about the snapshot it serves."""
    m = snapshot.manifest
    return {
        "version": snapshot.version, "model": m.model, "dim": m.dim, "chunk_sizes": m.chunk_sizes,
        "index_kind": snapshot.vectors.kind, "faiss_on_gpu": snapshot.vectors.search_device == "gpu",
        "files": len(m.files), "nodes": m.nodes, "leaves": m.leaves, "created_at": m.created_at,
        "vector_backend": m.backend, "embedder_backend": m.embedder_backend or None,
        **({"milvus": {k: m.vector_store[k] for k in ("uri", "collection", "index_type") if k in m.vector_store}}
           if m.backend == "milvus" else {}),
    }


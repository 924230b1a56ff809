"""Leaf vectors in Milvus (a server, a cluster, or Milvus Lite in a file) through pymilvus.

The second `VectorIndex`. A row is one leaf: `id` (the leaf's int64 `vector_id`), `vector`,
and, for filters outside notesrag, `source`, `heading_path` (joined by " > "), `level` and
`node_id`. Inner product on normalised vectors; the default `FLAT` index is exact, so
rankings equal FAISS's exact search; `HNSW` is there for large collections on a server.

How a shared, mutable collection keeps the guarantees of immutable snapshots:

- **A snapshot is a view.** A Milvus snapshot directory holds `vector_ids.npy` (the ids it
  knows) instead of `vectors.faiss`; its manifest names the URI (no token, no password) and
  the collection. `search` asks Milvus for a few more than k and drops ids the snapshot does
  not know, asking again for more when too many were dropped, so the answer is exactly the
  top k of the snapshot's own rows, whatever else the collection holds (up to Milvus's
  16,384 candidates a query: past that many foreign rows nearer than its own, fewer come back).
- **Rows are written once.** Ids hash the node id, which hashes the file, level, offset and
  text, so within one collection (one model) an id always stands for the same vector. `add` writes only ids the collection
  lacks (an upsert, so a race cannot duplicate a row) and never rewrites one: a row an older
  snapshot reads never changes under it. Writes happen during the ingest, before CURRENT
  switches; new rows are invisible to the snapshots being served, which do not know them.
- **Deletes wait until no kept snapshot needs the row.** `remove` only drops ids from the
  in-memory view. After CURRENT has switched, rows are deleted that no snapshot directory
  still on disk knows (the newest three are kept, see `index.store.snapshot.prune`), so every
  snapshot on disk, the one a hot swap has just replaced included, answers as it did when
  it was written. Candidates come from a journal in the index directory
  (`.milvus-<collection>.journal`): ids are journaled before they are written and when a
  snapshot knowing them is pruned, so rows left by an ingest killed at any moment are found
  again and deleted by the next ingest, at a cost that follows what changed (no scan of the
  collection).
- **A rebuild is a new collection.** `--rebuild`, a new model, new chunk sizes, another URI
  or index type start a generation (`<name>_g<8 hex>`); the alias `<name>` follows the live
  generation for tools outside notesrag, and a generation no kept snapshot uses is dropped.
  Vectors move between backends and generations without embedding again.

Why not a collection per snapshot: every ingest would copy every vector, and re-ingesting one
changed file would cost the whole corpus. Searches use Strong consistency (collection
default), so a snapshot swapped to right after an ingest sees every row that ingest wrote.

Milvus Lite (a `.db` path) runs the engine inside the process that opens the file, and only
one process at a time may open it: a server serving from `<index_dir>/milvus.db` runs its own
ingest jobs (`POST /v1/ingest`), but `notesrag ingest` from another process fails with a
message saying so. Several processes (uvicorn workers, a CLI beside a server) need a Milvus
server: set `milvus_uri` to its URL. Lite survives a killed process (each write reaches the
OS before the call returns); after an OS crash or power loss it may lose the last ingest's
rows, and the snapshot would then load with rows missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from index.config import IndexConfig
from index.store.errors import SnapshotError, SnapshotUnavailable
from index.store.tree import NodeTree
from index.store.vectors import HNSW_EF_CONSTRUCTION, HNSW_M, checked_rows

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger("notesrag.milvus")

BACKEND = "milvus"
LITE_FILE = "milvus.db"  # the default Lite database, inside the index directory
IDS_FILE = "vector_ids.npy"  # what a snapshot knows; written instead of vectors.faiss
OWNER_FILE = ".milvus-owner"  # a random token naming this index directory's collections
HEADING_SEP = " > "
MAX_VARCHAR = 65_535
WRITE_BATCH = 1_000  # rows a request: 1000 x 384 floats is 1.5 MB, under gRPC's 64 MB
READ_BATCH = 4_096
MAX_LIMIT = 16_384  # Milvus's largest top-k
EXTRA = 16  # candidates asked for beyond k, for rows the snapshot does not know
OWNER_PROPERTY = "notesrag.owner"
# The retriever asks for at most 150 candidates; HNSW's ef must be at least the limit.
HNSW_EF_SEARCH = 256

_clients: dict[tuple[str, str], MilvusClient] = {}
_clients_lock = threading.Lock()


# -- where Milvus is -----------------------------------------------------------------------
def is_lite(uri: str) -> bool:
    """A Milvus Lite database file (pymilvus runs the engine in-process), not a server URL."""
    return "://" not in uri and uri.endswith(".db")


def redact(uri: str) -> str:
    """The URI without user, password or query string: what may be written down or logged."""
    if is_lite(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def configured_uri(config: IndexConfig, index_dir: Path) -> str:
    """The URI this process uses: the configured one, else Lite in the index directory."""
    if config.milvus_uri:
        uri = config.milvus_uri.strip()
        return str(Path(uri).expanduser().resolve()) if is_lite(uri) else uri
    return str((Path(index_dir) / LITE_FILE).resolve())


def recorded_uri(uri: str, index_dir: Path) -> str:
    """How a manifest names `uri`: a Lite file inside the index directory by its relative path
    (the directory may be mounted elsewhere), a server without credentials."""
    if is_lite(uri):
        with contextlib.suppress(ValueError):
            return str(Path(uri).relative_to(Path(index_dir).resolve()))
        return uri
    return redact(uri)


def resolve_recorded(uri: str, index_dir: Path) -> str:
    if is_lite(uri) and not Path(uri).is_absolute():
        return str((Path(index_dir) / uri).resolve())
    return uri


def connect(uri: str, token: str | None = None) -> MilvusClient:
    """A client for `uri`, shared by every index of this process that uses the same URI and token."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise SnapshotError("the Milvus vector backend needs pymilvus (and milvus-lite for a .db file): "
                            "pip install 'notesrag[scale]'") from None
    key = (uri, token or "")
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        try:
            with _quiet("milvus_lite.server_manager"):  # it logs a traceback; the error below says it all
                client = MilvusClient(uri=uri, token=token or "", timeout=30)
        except Exception as e:
            raise SnapshotUnavailable(_unreachable(uri, e)) from None
        _clients[key] = client
        return client


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    lg = logging.getLogger(logger)
    before = lg.level
    lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        lg.setLevel(before)


def release(uri: str) -> None:
    """Close this process's clients of `uri`; for Milvus Lite also stop its engine, which frees the
    file for another process (Lite otherwise holds it until this process exits)."""
    with _clients_lock:
        for key in [k for k in _clients if k[0] == uri]:
            with contextlib.suppress(Exception):
                _clients.pop(key).close()
    if is_lite(uri):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def _unreachable(uri: str, error: Exception) -> str:
    if not is_lite(uri):
        return f"cannot reach Milvus at {redact(uri)}: {error}"
    if _lite_locked(Path(uri)):
        return (f"the Milvus Lite database {uri} is open in another process (a running notesrag "
                "server?): Milvus Lite serves one process at a time. Ingest through that server "
                "(POST /v1/ingest), stop it first, or run a Milvus server and set NOTESRAG_MILVUS_URI")
    return f"cannot open the Milvus Lite database {uri}: {error}"


def _lite_locked(path: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on the database directory."""
    try:
        fd = os.open(path / "LOCK", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def owner_token(index_dir: Path) -> str:
    """This index directory's token, made once: it marks the collections its ingests may drop."""
    path = Path(index_dir) / OWNER_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{8}", token):
            return token
    token = secrets.token_hex(4)
    tmp = path.with_name(f"{OWNER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)
    return token


def default_name(index_dir: Path, owner: str) -> str:
    """`notesrag_<index dir name>_<owner>`: readable, and unique to this index directory."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", Path(index_dir).resolve().name).strip("_")[:40] or "index"
    return f"notesrag_{slug}_{owner}"


def _generation_of(name: str, prefix: str) -> bool:
    return re.fullmatch(re.escape(prefix) + r"_g[0-9a-f]{8}", name) is not None


# -- the index -------------------------------------------------------------------------------
class MilvusIndex:
    """Leaf vectors in one Milvus collection; this object is one snapshot's view of it (see above).

    `search` returns (scores, ids) like `FaissIndex`, ids -1 where fewer than k exist.
    """

    backend = BACKEND
    on_gpu = False

    def __init__(self, client: MilvusClient, uri: str, collection: str, dim: int, *,
                 prefix: str, owner: str, index_type: str = "FLAT", recorded: str | None = None,
                 ids: np.ndarray | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.client = client
        self.uri = uri  # as this process reaches it; may hold credentials, never written down
        self.recorded = recorded if recorded is not None else redact(uri)
        self.collection = collection
        self.prefix = prefix
        self.owner = owner
        self.index_type = index_type
        self.dim = dim
        self.ef_search = HNSW_EF_SEARCH
        self._ids = np.unique(np.asarray(ids if ids is not None else [], dtype=np.int64))
        self._added: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._trees: tuple[NodeTree, ...] = ()
        self._journal: Path | None = None

    # -- what FaissIndex also offers ------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.index_type.lower()

    @property
    def search_device(self) -> str:
        return BACKEND

    @property
    def lite(self) -> bool:
        return is_lite(self.uri)

    def __len__(self) -> int:
        return len(self.known())

    def known(self) -> np.ndarray:
        """The sorted ids this view holds."""
        with self._lock:
            if self._added:
                self._ids = np.union1d(self._ids, np.concatenate(self._added))
                self._added = []
            return self._ids

    def bind(self, *trees: NodeTree) -> None:
        """Where `add` finds a leaf's source, heading path and level (first tree that knows it)."""
        self._trees = trees

    def journal_into(self, index_dir: Path) -> None:
        """Journal written ids in `index_dir`, so a killed ingest's rows are found again."""
        self._journal = journal_path(index_dir, self.collection)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = checked_rows(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        if self._journal is not None:  # before the write: whatever happens next, GC can find it
            append_journal(self._journal, ids)
        first = np.zeros(len(ids), bool)
        first[np.unique(ids, return_index=True)[1]] = True
        new = np.flatnonzero(first & ~np.isin(ids, self._stored(ids)))  # write once, never rewrite
        for i in range(0, len(new), WRITE_BATCH):
            self.client.upsert(self.collection, [self._row(int(ids[j]), vectors[j])
                                                 for j in new[i:i + WRITE_BATCH]])
        with self._lock:
            self._added.append(ids)

    def _row(self, vid: int, vector: np.ndarray) -> dict[str, Any]:
        row: dict[str, Any] = {"id": vid, "vector": vector, "source": "", "heading_path": "",
                               "level": -1, "node_id": ""}
        for tree in self._trees:
            nid = tree.by_vector_id(vid)
            if nid is not None:
                n = tree[nid]
                row.update(source=_clip(n.source), heading_path=_clip(HEADING_SEP.join(n.heading_path)),
                           level=n.level, node_id=n.id)
                break
        return row

    def _stored(self, ids: np.ndarray) -> np.ndarray:
        """The ids among `ids` the collection already holds."""
        found: list[int] = []
        for i in range(0, len(ids), WRITE_BATCH):
            chunk = ids[i:i + WRITE_BATCH].tolist()
            rows = self.client.query(self.collection, filter=f"id in {chunk}", output_fields=["id"],
                                     limit=len(chunk))
            found.extend(int(r["id"]) for r in rows)
        return np.array(found, np.int64)

    def remove(self, ids: np.ndarray) -> int:
        """Drop ids from this view; the rows go once no kept snapshot knows them (`release_unused`)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        known = self.known()
        with self._lock:
            self._ids = np.setdiff1d(known, ids, assume_unique=True)
            return len(known) - len(self._ids)

    def maybe_upgrade(self) -> None:
        """Nothing: the index type is chosen when a collection is made (`milvus_index_type`)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        known = self.known()
        n = len(queries)
        k = min(k, len(known), MAX_LIMIT)
        if k <= 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        scores = np.full((n, k), -np.finfo(np.float32).max, np.float32)
        ids = np.full((n, k), -1, np.int64)
        todo = list(range(n))
        limit = min(k + max(k, EXTRA), MAX_LIMIT)
        while todo:
            again = []
            for qi, hits in zip(todo, self._search(queries[todo], limit), strict=True):
                hid = np.fromiter((h["id"] for h in hits), np.int64, len(hits))
                hsc = np.fromiter((h["distance"] for h in hits), np.float32, len(hits))
                mine = _member(hid, known)
                hid, hsc = hid[mine][:k], hsc[mine][:k]
                if len(hid) < k and len(hits) >= limit and limit < MAX_LIMIT:
                    again.append(qi)  # rows this snapshot does not know crowded it out: ask for more
                    continue
                ids[qi, :len(hid)], scores[qi, :len(hid)] = hid, hsc
            todo, limit = again, min(limit * 4, MAX_LIMIT)
        return scores, ids

    def _search(self, queries: np.ndarray, limit: int) -> list[Any]:
        from pymilvus.exceptions import MilvusException

        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.ef_search, limit)}
        try:
            return list(self.client.search(self.collection, data=list(queries), limit=limit,
                                           search_params=params, output_fields=["id"]))
        except MilvusException as e:  # the service answers 503, not 500
            raise SnapshotUnavailable(f"Milvus at {redact(self.uri)}, collection {self.collection}: "
                                      f"{e}") from None

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of this view, by id."""
        ids = self.known()
        vecs = np.zeros((len(ids), self.dim), np.float32)
        at = {int(v): i for i, v in enumerate(ids.tolist())}
        for i in range(0, len(ids), READ_BATCH):
            for r in self.client.get(self.collection, ids=ids[i:i + READ_BATCH].tolist(),
                                     output_fields=["id", "vector"]):
                vecs[at[int(r["id"])]] = np.asarray(r["vector"], np.float32)
        return ids, vecs

    def flush(self) -> None:
        """Lite only: move written rows out of the memtable (searching it is slow: 380 ms against
        9 ms at 10k rows); a server seals segments itself and advises against frequent flushes."""
        if self.lite:
            self.client.flush(self.collection)

    def save(self, path: Path) -> None:
        """Write the ids this view knows (the snapshot's part of the shared collection)."""
        self.flush()
        with open(path, "wb") as f:
            np.save(f, self.known())

    def describe(self) -> dict[str, str]:
        """What a manifest records: where the rows are, never how to log in."""
        return {"uri": self.recorded, "collection": self.collection, "name": self.prefix,
                "owner": self.owner, "index_type": self.index_type, "metric": "IP"}

    def serves(self, config: IndexConfig, index_dir: Path) -> bool:
        """Whether new rows for `config` belong in this collection (else: a new generation)."""
        return (configured_uri(config, index_dir) == self.uri
                and config.milvus_index_type == self.index_type
                and config.milvus_collection in (None, self.prefix))

    # -- making and opening collections ------------------------------------------------------
    @classmethod
    def create(cls, config: IndexConfig, dim: int, index_dir: Path, prefix: str | None = None) -> MilvusIndex:
        """A new, empty generation collection for the corpus of `index_dir`."""
        from pymilvus import DataType, MilvusClient

        index_dir = Path(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        uri = configured_uri(config, index_dir)
        client = connect(uri, config.milvus_token)
        owner = owner_token(index_dir)
        prefix = config.milvus_collection or prefix or default_name(index_dir, owner)
        name = f"{prefix}_g{secrets.token_hex(4)}"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=f"notesrag leaf vectors; owner={owner}")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("heading_path", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("level", DataType.INT16)
        schema.add_field("node_id", DataType.VARCHAR, max_length=64)
        index = client.prepare_index_params()
        params = ({"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
                  if config.milvus_index_type == "HNSW" else {})
        index.add_index(field_name="vector", index_type=config.milvus_index_type, metric_type="IP",
                        params=params)
        # Strong: a snapshot switched to right after an ingest sees every row the ingest wrote.
        client.create_collection(name, schema=schema, consistency_level="Strong",
                                 properties={OWNER_PROPERTY: owner})
        # sync=False: the collection is empty, and waiting asks for a timestamp Lite cannot give
        client.create_index(name, index, sync=False)
        client.load_collection(name)
        log.info("milvus collection %s created at %s (%s, dim %d)", name, redact(uri),
                 config.milvus_index_type, dim)
        self = cls(client, uri, name, dim, prefix=prefix, owner=owner, index_type=config.milvus_index_type,
                   recorded=recorded_uri(uri, index_dir))
        self.journal_into(index_dir)
        return self

    @classmethod
    def load(cls, snapshot_dir: Path, info: dict[str, Any], dim: int,
             config: IndexConfig | None = None) -> MilvusIndex:
        """The view of the snapshot in `snapshot_dir`, whose manifest recorded `info`.

        `config.milvus_uri` (how this process reaches the server) wins over the recorded URI.
        """
        snapshot_dir = Path(snapshot_dir)
        index_dir = snapshot_dir.parent
        try:
            recorded, name = str(info["uri"]), str(info["collection"])
        except KeyError as e:
            raise SnapshotError(f"snapshot {snapshot_dir}: the manifest names no Milvus {e.args[0]}") from None
        if config is not None and config.milvus_uri:
            uri = configured_uri(config, index_dir)
        else:
            uri = resolve_recorded(recorded, index_dir)
        if is_lite(uri) and not Path(uri).exists():
            raise SnapshotError(f"snapshot {snapshot_dir} keeps its vectors in the Milvus Lite database "
                                f"{uri}, which does not exist (a Milvus snapshot holds no vectors "
                                "itself: copy the whole index directory)")
        client = connect(uri, config.milvus_token if config is not None else None)
        try:
            exists = client.has_collection(name)
            if exists:
                client.load_collection(name)
        except Exception as e:
            raise SnapshotUnavailable(f"Milvus at {redact(uri)}: {e}") from None
        if not exists:
            raise SnapshotError(f"snapshot {snapshot_dir} keeps its vectors in Milvus collection {name!r}, "
                                f"which {redact(uri)} does not have")
        try:
            ids = np.load(snapshot_dir / IDS_FILE)
        except FileNotFoundError:
            raise SnapshotError(f"snapshot {snapshot_dir} has no {IDS_FILE}") from None
        self = cls(client, uri, name, dim, prefix=str(info.get("name", name)), owner=str(info.get("owner", "")),
                   index_type=str(info.get("index_type", "FLAT")), recorded=recorded, ids=ids)
        self.journal_into(index_dir)
        return self

    # -- after CURRENT switched -------------------------------------------------------------
    def release_unused(self, index_dir: Path) -> int:
        """Delete rows no snapshot left in `index_dir` knows, drop this corpus's generations none
        uses, point the alias at this collection; the number of rows deleted."""
        index_dir = Path(index_dir)
        kept = list(kept_views(index_dir))
        journal = journal_path(index_dir, self.collection)
        candidates = read_journal(journal)
        deleted = 0
        if len(candidates):
            keep = [ids() for coll, ids in kept if coll == self.collection]
            keep_ids = np.unique(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
            gone = np.setdiff1d(candidates, keep_ids)
            for i in range(0, len(gone), WRITE_BATCH):
                self.client.delete(self.collection, ids=gone[i:i + WRITE_BATCH].tolist())
            deleted = len(gone)
            if deleted:
                self.flush()
                log.info("milvus %s: deleted %d rows no kept snapshot knows", self.collection, deleted)
        journal.unlink(missing_ok=True)
        used = {coll for coll, _ in kept}
        for name in self.client.list_collections():
            if name != self.collection and name not in used and _generation_of(name, self.prefix) \
                    and self._owns(name):
                self.client.drop_collection(name)
                journal_path(index_dir, name).unlink(missing_ok=True)
                log.info("milvus collection %s dropped: no kept snapshot uses it", name)
        self._point_alias()
        return deleted

    def _owns(self, name: str) -> bool:
        d = self.client.describe_collection(name)
        props = d.get("properties") or {}
        return bool(self.owner) and (props.get(OWNER_PROPERTY) == self.owner
                                     or f"owner={self.owner}" in str(d.get("description", "")))

    def _point_alias(self) -> None:
        try:
            if self.prefix in self.client.list_aliases().get("aliases", []):
                self.client.alter_alias(self.collection, self.prefix)
            else:
                self.client.create_alias(self.collection, self.prefix)
        except Exception as e:  # a collection of that very name, say: the alias is a convenience
            log.warning("milvus alias %s -> %s not set: %s", self.prefix, self.collection, e)


def prune_and_release(index_dir: Path, vectors: MilvusIndex,
                      prune: Callable[..., None]) -> None:
    """`prune`, journaling the ids of each removed snapshot first, then `release_unused`.

    Runs after CURRENT switched: a failure is logged, and the next ingest finishes the job.
    """
    def journal_snapshot(snapshot_dir: Path) -> None:
        view = _view(snapshot_dir)
        if view is not None:
            append_journal(journal_path(index_dir, view[0]), view[1]())

    try:
        prune(index_dir, on_remove=journal_snapshot)
        vectors.release_unused(index_dir)
    except Exception as e:
        log.warning("milvus: releasing unused rows of %s failed (the next ingest retries): %s",
                    vectors.collection, e)


def kept_views(index_dir: Path) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(collection, ids loader) of each Milvus snapshot directory in `index_dir`."""
    for snap in sorted(Path(index_dir).glob("snap-*")):
        view = _view(snap)
        if view is not None:
            yield view


def _view(snapshot_dir: Path) -> tuple[str, Callable[[], np.ndarray]] | None:
    try:
        manifest = json.loads((snapshot_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("backend") != BACKEND:
        return None
    collection = str(manifest.get("vector_store", {}).get("collection", ""))
    return collection, lambda: np.load(snapshot_dir / IDS_FILE).astype(np.int64)


def journal_path(index_dir: Path, collection: str) -> Path:
    return Path(index_dir) / f".milvus-{collection}.journal"


def append_journal(path: Path, ids: np.ndarray) -> None:
    """Append ids (raw int64); reaching the OS is enough: a lost entry only leaks a row."""
    with open(path, "ab") as f:
        f.write(np.ascontiguousarray(ids, dtype="<i8").tobytes())


def read_journal(path: Path) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return np.zeros(0, np.int64)
    raw = raw[: len(raw) // 8 * 8]  # a writer killed mid-append
    return np.unique(np.frombuffer(raw, dtype="<i8").astype(np.int64))


def stored_ids(index: MilvusIndex) -> np.ndarray:
    """Every id in the collection (a full scan: for tests and checks, not for ingestion)."""
    it = index.client.query_iterator(index.collection, batch_size=READ_BATCH, output_fields=["id"])
    out: list[int] = []
    try:
        while rows := it.next():
            out.extend(int(r["id"]) for r in rows)
    finally:
        it.close()
    return np.unique(np.array(out, np.int64))


def copy_into(target: MilvusIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
    for i in range(0, len(ids), WRITE_BATCH * 4):
        target.add(ids[i:i + WRITE_BATCH * 4], vectors[i:i + WRITE_BATCH * 4])


def _member(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    if len(known) == 0:
        return np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return known[pos] == ids


def _clip(text: str) -> str:
    """Valid UTF-8 of at most MAX_VARCHAR bytes, cut at a character boundary."""
    return text.encode("utf-8", "replace")[:MAX_VARCHAR].decode("utf-8", "ignore")

"""The asyncio ingestion pipeline: discover -> read -> parse/chunk -> embed -> index -> snapshot.

Stages are tasks joined by bounded queues. Reading, parsing and embedding run
in worker threads (one thread per stage), so the next file is parsed while the
last batch is embedded, and the event loop of a server that runs an ingest
stays free. Only the tree, the vector index and the sentence rows grow with
the corpus; texts are dropped once a batch is embedded.

Incremental by content: a file whose hash is unchanged keeps its nodes and
vectors; a changed file is re-chunked and only chunks not already in the
index are embedded; a file gone from an ingested root leaves every index; a
file that cannot be read now keeps what the snapshot had of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index.config import IndexConfig
from index.ingestion.chunking import Chunker
from index.ingestion.documents import (
    MAX_RUN,
    OUTSIDE,
    SkipFile,
    SourceFile,
    discover,
    drop_long_runs,
    is_utf8,
    read_source,
    sections,
)
from index.models.embedder import Embedder, get_embedder
from index.store.backends import open_vectors
from index.store.lexical import BM25Index
from index.store.sentences import SentenceStore, split_sentences
from index.store.snapshot import (
    FileEntry,
    Manifest,
    Snapshot,
    SnapshotError,
    check_compatible,
    current_path,
    load_snapshot,
    write_snapshot,
)
from index.store.tree import Node, NodeTree, vector_id

log = logging.getLogger("notesrag.ingest")

_DONE = object()
T = TypeVar("T")


class IngestError(Exception):
    """Ingestion stopped; the previous snapshot is untouched."""


class IngestCancelled(IngestError):
    """`should_stop` said so; the previous snapshot is untouched."""


@dataclass
class IngestReport:
    files_seen: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)  # ingested with parts left out, and why
    nodes: int = 0
    leaves: int = 0
    leaves_embedded: int = 0
    leaves_reused: int = 0
    sentences_embedded: int = 0
    files_done: int = 0
    files_total: int = 0
    stage: str = "starting"
    seconds: float = 0.0
    snapshot: str | None = None
    index_kind: str = ""
    engine: str = "asyncio"  # or, say, "ray, 2 CPU actors" (index.ingestion.ray_engine)

    @property
    def changed(self) -> bool:
        return bool(self.files_new or self.files_changed or self.files_removed)

    def summary(self) -> str:
        if self.snapshot is not None and not self.changed:
            head = f"nothing changed: {self.files_unchanged} files unchanged, 0 chunks embedded"
        else:
            head = (f"ingested {self.files_seen} files ({self.files_new} new, {self.files_changed} changed, "
                    f"{self.files_unchanged} unchanged, {self.files_removed} removed); "
                    f"embedded {self.leaves_embedded} chunks, reused {self.leaves_reused}")
        rate = self.leaves_embedded / self.seconds if self.seconds else 0.0
        tail = (f"; {self.nodes} nodes ({self.leaves} leaves, {self.index_kind}) in snapshot {self.snapshot}; "
                f"{len(self.skipped)} skipped; {self.seconds:.1f}s ({rate:.0f} chunks/s)")
        if self.engine != "asyncio" and self.leaves_embedded:
            tail += f"; embedded on {self.engine}"
        return head + tail

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in self.__dict__.items()}
        d["summary"] = self.summary()
        return d


def embed_text(node: Node) -> str:
    """What is embedded and indexed for a leaf: its heading path, then its text."""
    if node.heading_path:
        return " > ".join(node.heading_path) + "\n" + node.text
    return node.text


# A leaf as the embedding step needs it: (vector id, start of its text in the source file,
# what is embedded for it, where its own text starts in that). Plain data, so a batch of them
# can be shipped to another process (index.ingestion.ray_engine) and turned into the same vectors there.
LeafRow = tuple[int, int, str, int]


def leaf_row(node: Node) -> LeafRow:
    text = embed_text(node)
    return vector_id(node.id), node.start, text, len(text) - len(node.text)


@dataclass
class EmbedInputs:
    """The texts one batch of leaves is embedded as: the leaves', then each sentence of each leaf."""

    leaf_ids: np.ndarray
    texts: list[str]
    owners: np.ndarray  # per sentence: its leaf's vector id
    starts: np.ndarray  # per sentence: character span in the source file
    ends: np.ndarray
    # per leaf: the character spans of its sentences in what is embedded for it
    local: list[list[tuple[int, int]]] = field(default_factory=list)

    def sentences(self, vectors: np.ndarray) -> SentenceStore:
        """The sentence rows, given the vectors of `texts` (leaves first)."""
        return SentenceStore(self.owners, self.starts, self.ends, vectors[len(self.leaf_ids):])


def embedding_inputs(leaves: Sequence[LeafRow]) -> EmbedInputs:
    texts = [text for _, _, text, _ in leaves]
    owners: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    local: list[list[tuple[int, int]]] = []
    for vid, start, text, body_at in leaves:
        body = text[body_at:]
        spans = split_sentences(body)
        local.append([(body_at + a, body_at + b) for a, b in spans])
        for a, b in spans:
            owners.append(vid)
            starts.append(start + a)
            ends.append(start + b)
            texts.append(body[a:b])
    return EmbedInputs(np.array([r[0] for r in leaves], dtype=np.int64), texts, np.array(owners, np.int64),
                       np.array(starts, np.int64), np.array(ends, np.int64), local)


SENTENCE_VECTORS = ("pooled", "separate")


def embed_leaves(embedder: Embedder, leaves: Sequence[LeafRow], batch_size: int | None,
                 sentence_vectors: str = "separate") -> tuple[np.ndarray, np.ndarray, SentenceStore]:
    """(leaf vector ids, leaf vectors, sentence rows) of a batch of leaves.

    "separate": every sentence is encoded on its own after its leaf (two passes). "pooled",
    where the embedder mean-pools its tokens (`encode_spans`): one pass over the leaves, each
    sentence's vector pooled from its leaf's token vectors; other embedders, and sentences
    cut off by the model's window, fall back to their own pass.
    """
    inputs = embedding_inputs(leaves)
    n = len(inputs.leaf_ids)
    encode_spans = getattr(embedder, "encode_spans", None)
    if sentence_vectors != "pooled" or encode_spans is None or not getattr(embedder, "pools_spans", False):
        vecs = embedder.encode(inputs.texts, batch_size)
        return inputs.leaf_ids, vecs[:n], inputs.sentences(vecs)
    leaf_vecs, per_leaf = encode_spans(inputs.texts[:n], inputs.local, batch_size)
    sent = np.concatenate(per_leaf) if per_leaf else np.zeros((0, embedder.dim), np.float32)
    missing = np.flatnonzero(np.isnan(sent).any(axis=1))
    if len(missing):
        sent[missing] = embedder.encode([inputs.texts[n + i] for i in missing], batch_size)
    return inputs.leaf_ids, leaf_vecs, SentenceStore(inputs.owners, inputs.starts, inputs.ends, sent)


@contextlib.contextmanager
def _locked(index_dir: Path) -> Iterator[None]:
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


async def ingest(
    paths: Sequence[str | Path],
    index_dir: str | Path,
    config: IndexConfig | None = None,
    *,
    embedder: Embedder | None = None,
    strict: bool = False,
    rebuild: bool = False,
    progress: bool = False,
    on_progress: Callable[[IngestReport], None] | None = None,
    confine: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_leaves: int | None = None,
) -> IngestReport:
    """Ingest `paths` into the snapshot in `index_dir` and return what was done.

    With `confine` (a server's corpus root), nothing outside that folder is read: the paths
    are resolved again here, each file opened is checked after links are followed, and
    whatever the old snapshot holds from outside it leaves the index.

    `should_stop` is asked before each file and each batch: when it answers true the run
    stops with IngestCancelled. `max_leaves` bounds the chunks one run may embed (IngestError
    past it, before they are embedded).

    Raises FileNotFoundError for a missing path, IngestError for a bad file under
    `strict` or a path that leads outside `confine`, SnapshotMismatchError when the
    existing snapshot was built with another embedder (unless `rebuild`).
    """
    config = config or IndexConfig()
    fence = Path(confine).resolve(strict=True) if confine is not None else None
    checked_roots(paths, fence)  # fail at once, before the model loads
    emb = embedder if embedder is not None else await asyncio.to_thread(get_embedder, config.model,
                                                                         config.device, config.embed_backend)
    index_dir = Path(index_dir)
    # the roots are resolved again once the lock is held: a job may wait for it, and a link
    # swapped in meanwhile must not take the run outside `confine`
    def make_run() -> _Run:
        run = _Run(checked_roots(paths, fence), index_dir, config, emb, strict, rebuild, progress, on_progress,
                   fence)
        run.should_stop, run.max_leaves = should_stop, max_leaves
        return run

    return await run_locked(index_dir, make_run)


def checked_roots(paths: Sequence[str | Path], confine: Path | None = None) -> list[Path]:
    """The resolved paths to ingest; FileNotFoundError names the first that does not exist,
    IngestError the first that resolves outside `confine` (resolved) when one is given."""
    roots = [Path(p).resolve() for p in paths]
    if not roots:
        raise ValueError("no paths to ingest")
    for given, r in zip(paths, roots, strict=True):
        if not r.exists():
            raise FileNotFoundError(f"no such file or directory: {r}")
        if confine is not None and not _under(r, confine):
            raise IngestError(f"{given} resolves outside the corpus root")
    return roots


async def run_locked(index_dir: Path, make_run: Callable[[], _Run]) -> IngestReport:
    """Make and run an ingestion holding the index directory's lock (one writer at a time)."""
    lock = _locked(index_dir)
    await asyncio.to_thread(lock.__enter__)
    try:
        return await make_run().go()
    finally:
        lock.__exit__(None, None, None)


class _Run:
    """One ingestion. The embedding stage is `_embed_stage`: index.ingestion.ray_engine overrides it."""

    def __init__(self, roots: list[Path], index_dir: Path, config: IndexConfig, embedder: Embedder,
                 strict: bool, rebuild: bool, progress: bool,
                 on_progress: Callable[[IngestReport], None] | None, confine: Path | None = None) -> None:
        self.roots, self.index_dir, self.config, self.embedder = roots, index_dir, config, embedder
        self.confine = confine
        self.should_stop: Callable[[], bool] | None = None
        self.max_leaves: int | None = None
        self._to_embed = 0
        self.strict, self.rebuild, self.progress, self.on_progress = strict, rebuild, progress, on_progress
        self.report = IngestReport()
        self.tree = NodeTree()
        self.files: dict[str, FileEntry] = {}
        self.new_rows: list[SentenceStore] = []
        self.batch_size: int = config.batch_size or int(getattr(embedder, "default_batch_size", 32))
        self.old: Snapshot | None = None
        self._bar: Any = None
        # One long-lived thread per CPU stage: torch and the splitter each keep their
        # allocator arenas and caches in one thread, not in whichever pool thread
        # `asyncio.to_thread` picks next.
        self._parse_pool = ThreadPoolExecutor(1, thread_name_prefix="notesrag-parse")
        self._embed_pool = ThreadPoolExecutor(1, thread_name_prefix="notesrag-embed")
        self._t0 = time.perf_counter()

    # -- orchestration --------------------------------------------------------------
    async def go(self) -> IngestReport:
        self.old = await asyncio.to_thread(self._load_old)
        self.vectors = await asyncio.to_thread(open_vectors, self.config, self.embedder.dim, self.index_dir,
                                               self.tree, self.old)
        self.chunker = Chunker(self.config.chunk_sizes, self.config.chunk_overlap)
        paths = await self._discover()
        self.report.files_total = len(paths)
        self._open_bar(len(paths))
        try:
            read_q: asyncio.Queue[object] = asyncio.Queue(self.config.queue_size)
            parse_q: asyncio.Queue[object] = asyncio.Queue(self.config.queue_size)
            embed_q: asyncio.Queue[object] = asyncio.Queue(self.config.queue_size)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._discover_stage(paths, read_q))
                tg.create_task(self._read_stage(read_q, parse_q))
                tg.create_task(self._parse_stage(parse_q, embed_q))
                tg.create_task(self._embed_stage(embed_q))
            self._carry_outside_roots()
            self._set_stage("writing snapshot")
            await asyncio.to_thread(self._finish)
        except BaseExceptionGroup as eg:  # a failed stage cancels the others; raise its error
            raise eg.exceptions[0] from None
        finally:
            self._parse_pool.shutdown(wait=False, cancel_futures=True)
            self._embed_pool.shutdown(wait=False, cancel_futures=True)
            if self._bar is not None:
                self._bar.close()
        self.report.seconds = time.perf_counter() - self._t0
        self._set_stage("done")
        return self.report

    def _load_old(self) -> Snapshot | None:
        if self.rebuild or current_path(self.index_dir) is None:
            return None
        snap = load_snapshot(self.index_dir, config=self.config)
        check_compatible(snap.manifest, self.embedder.model_name, self.embedder.dim, snap.path)
        m = snap.manifest
        if tuple(m.chunk_sizes) != self.config.chunk_sizes or m.chunk_overlap != self.config.chunk_overlap:
            log.info("chunk sizes changed (%s -> %s): rebuilding", m.chunk_sizes, list(self.config.chunk_sizes))
            return None
        return snap

    async def _discover(self) -> Sequence[object]:
        """What the read stage takes, in order: here the files under the roots (a web source,
        index.ingestion.sources, fetches its pages instead)."""
        return await asyncio.to_thread(lambda: list(discover(self.roots)))

    # -- stages ----------------------------------------------------------------------
    async def _discover_stage(self, paths: Sequence[object], out: asyncio.Queue[object]) -> None:
        for p in paths:
            await out.put(p)
        await out.put(_DONE)

    async def _read_stage(self, inp: asyncio.Queue[object], out: asyncio.Queue[object]) -> None:
        seen: set[str] = set()
        while (item := await inp.get()) is not _DONE:
            assert isinstance(item, Path)
            key = source_key(item)
            if key in seen:  # the same file reached through two roots (or a symlink)
                self._file_done()
                continue
            seen.add(key)
            self.report.files_seen += 1
            if not is_utf8(key):
                # the snapshot and every answer name files as text: a name that is not UTF-8 (a
                # surrogate-escaped byte) would fail the whole snapshot write
                self._skip(key.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                           "the file name is not valid UTF-8")
                continue
            if not any(_under(Path(key), r) for r in self.roots):
                # a link out of the folders being ingested: following it would index files nobody
                # named (on a server, files outside the corpus root), and they would stay in the
                # index after the link is gone, since removal only looks inside the roots
                self._skip(str(item.absolute()), "a symbolic link that leads outside the ingested folders")
                continue
            try:
                src = await asyncio.to_thread(read_source, item, self.config.max_file_bytes, self.confine)
            except SkipFile as e:
                # named by the link, never by where it leads outside
                self._skip(str(item.absolute()) if str(e) == OUTSIDE else key, str(e))
                continue
            old_entry = self.old.manifest.files.get(src.path) if self.old else None
            if old_entry is not None and old_entry.sha256 == src.sha256:
                self.report.files_unchanged += 1
                self._carry(src.path)
                self._file_done()
                continue
            if old_entry is not None:
                self.report.files_changed += 1
            else:
                self.report.files_new += 1
            await out.put(src)
        await out.put(_DONE)

    async def _parse_stage(self, inp: asyncio.Queue[object], out: asyncio.Queue[object]) -> None:
        batch: list[Node] = []
        while (item := await inp.get()) is not _DONE:
            assert isinstance(item, SourceFile)
            src = item
            self._check_stop()
            secs, cut = drop_long_runs(sections(src))
            if cut:
                reason = (f"left out {cut} run(s) of over {MAX_RUN} characters without whitespace "
                          "(encoded or minified data)")
                log.warning("%s: %s", src.path, reason)
                self.report.partial[src.path] = reason
            nodes = await self._in(self._parse_pool, self.chunker.chunk, src, secs)
            self.tree.add(nodes)
            self.files[src.path] = FileEntry(src.sha256, src.size, len(nodes), time.time())
            leaves = [n for n in nodes if self.tree.is_leaf(n.id)]
            for leaf in leaves:
                if self.old is not None and leaf.id in self.old.tree and self.old.tree.is_leaf(leaf.id):
                    self.report.leaves_reused += 1
                    continue
                batch.append(leaf)
                self._to_embed += 1
                if self.max_leaves is not None and self._to_embed > self.max_leaves:
                    raise IngestError(f"over the budget of {self.max_leaves} chunks to embed in one ingest "
                                      f"(at {src.path}); nothing was written")
                if len(batch) >= self.batch_size:
                    await out.put(batch)
                    batch = []
            self._file_done()
        if batch:
            await out.put(batch)
        await out.put(_DONE)

    async def _embed_stage(self, inp: asyncio.Queue[object]) -> None:
        while (item := await inp.get()) is not _DONE:
            assert isinstance(item, list)
            self._check_stop()
            await self._in(self._embed_pool, self._embed_batch, item)
            self.report.leaves_embedded += len(item)
            self._tick()

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise IngestCancelled("cancelled; the previous snapshot stays")

    # -- work done in threads ------------------------------------------------------------
    @staticmethod
    async def _in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _embed_batch(self, leaves: list[Node]) -> None:
        self._add_embedded(*embed_leaves(self.embedder, [leaf_row(n) for n in leaves], self.batch_size,
                                         self.config.sentence_vectors))

    def _add_embedded(self, leaf_ids: np.ndarray, leaf_vectors: np.ndarray, sentences: SentenceStore) -> None:
        """Take the vectors of newly embedded leaves and of their sentences (every engine ends here)."""
        self.vectors.add(leaf_ids, leaf_vectors)
        self.new_rows.append(sentences)
        self.report.sentences_embedded += len(sentences)

    def _finish(self) -> None:
        old_tree = self.old.tree if self.old else None
        old_sentences = self.old.sentences if self.old else SentenceStore.empty(self.embedder.dim)
        if old_tree is not None:
            gone = [vector_id(i) for i in old_tree.leaves() if i not in self.tree]
            self.vectors.remove(np.array(gone, dtype=np.int64))
        leaves = self.tree.leaves()
        if len(self.tree) == 0:
            raise IngestError("no ingestible files: nothing to index "
                              f"({len(self.report.skipped)} skipped, {self.report.files_seen} seen)")
        if self.old is not None and not self.report.changed:
            self.report.snapshot = self.old.version
            self._fill_counts()
            return
        self.vectors.maybe_upgrade()
        kept = old_sentences.keep(np.array([vector_id(i) for i in leaves if old_tree and i in old_tree],
                                           dtype=np.int64))
        sentences = SentenceStore.concat([kept, *self.new_rows], self.embedder.dim)
        order = np.argsort(sentences.leaf, kind="stable")
        sentences = SentenceStore(sentences.leaf[order], sentences.start[order], sentences.end[order],
                                  sentences.vectors[order])
        lexical = BM25Index(list(leaves), [embed_text(self.tree[i]) for i in leaves])
        manifest = Manifest(
            model=self.embedder.model_name, dim=self.embedder.dim,
            embedder_backend=str(getattr(self.embedder, "backend", "")),
            roots=self._roots_kept(),
            chunk_sizes=list(self.config.chunk_sizes), chunk_overlap=self.config.chunk_overlap,
            files=dict(sorted(self.files.items())), skipped=dict(self.report.skipped),
            index_kind=self.vectors.kind, nodes=len(self.tree), leaves=len(leaves), sentences=len(sentences),
        )
        if len(self.vectors) != len(leaves):
            raise SnapshotError(f"index holds {len(self.vectors)} vectors for {len(leaves)} leaves")
        path = write_snapshot(self.index_dir, manifest, self.tree, self.vectors, lexical, sentences)
        self.report.snapshot = path.name
        self._fill_counts()

    def _roots_kept(self) -> list[str]:
        """This run's roots, and the earlier snapshot's that still hold one of its files."""
        roots = {str(r) for r in self.roots}
        if self.old is not None:
            roots |= {r for r in self.old.manifest.roots
                      if any(_under(Path(f), Path(r)) for f in self.files)}
        return sorted(roots)

    def _fill_counts(self) -> None:
        self.report.nodes = len(self.tree)
        self.report.leaves = len(self.tree.leaves())
        self.report.index_kind = self.vectors.kind

    # -- carrying what the old snapshot had ---------------------------------------------
    def _carry(self, source: str) -> None:
        assert self.old is not None
        if not self.tree.has_source(source):
            self.tree.add(self.old.tree[i] for i in self.old.tree.of_source(source))
        # also for a file with no nodes (headings only): else it would count as removed
        self.files.setdefault(source, self.old.manifest.files[source])

    def _carry_outside_roots(self) -> None:
        """Files of the old snapshot outside the ingested roots stay; those inside and gone leave,
        and so does everything from outside `confine` (an older snapshot may hold such files)."""
        if self.old is None:
            return
        for source in self.old.manifest.files:
            if self.confine is not None and not _under(Path(source), self.confine):
                self.tree.remove_source(source)  # carried by a skip of the same name, if any
                self.files.pop(source, None)
                self.report.files_removed += 1
                continue
            if source in self.files:
                continue
            if any(_under(Path(source), r) for r in self.roots) and source not in self.report.skipped:
                self.report.files_removed += 1
                continue
            self._carry(source)

    def _skip(self, path: str, reason: str) -> None:
        if self.strict:
            raise IngestError(f"{path}: {reason}")
        log.warning("skipped %s: %s", path, reason)
        self.report.skipped[path] = reason
        if self.old is not None and path in self.old.manifest.files:
            self._carry(path)  # nothing already in the snapshot is lost
        self._file_done()

    # -- progress ----------------------------------------------------------------------------
    def _open_bar(self, total: int) -> None:
        self._set_stage("ingesting")
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="file", desc="ingest", dynamic_ncols=True)

    def _file_done(self) -> None:
        self.report.files_done += 1
        if self._bar is not None:
            self._bar.update(1)
        self._tick()

    def _tick(self) -> None:
        if self._bar is not None:
            secs = max(time.perf_counter() - self._t0, 1e-9)
            self._bar.set_postfix(nodes=len(self.tree), embedded=self.report.leaves_embedded,
                                  nodes_per_s=f"{len(self.tree) / secs:.0f}", refresh=False)
        if self.on_progress is not None:
            self.on_progress(self.report)

    def _set_stage(self, stage: str) -> None:
        self.report.stage = stage
        if self.on_progress is not None:
            self.on_progress(self.report)


def source_key(path: Path) -> str:
    """How a file is named in the snapshot: its resolved absolute path."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return str(path.absolute())


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def ingest_sync(paths: Sequence[str | Path], index_dir: str | Path, config: IndexConfig | None = None,
                **kwargs: object) -> IngestReport:
    """`ingest` for callers without an event loop (scripts, notebooks)."""
    return asyncio.run(ingest(paths, index_dir, config, **kwargs))  # type: ignore[arg-type]

"""`ingest_ray`: the ingestion pipeline of `index.ingestion.pipeline` with its embedding stage on Ray Data.

Everything but the embedding is the asyncio pipeline's own code (`_Run`): discovery,
reading, content hashes, chunking, the incremental rules (a leaf already in the
snapshot is never embedded again), removal, the locked and crash-safe snapshot
write, the report and the progress bar. Only `_embed_stage` differs: the new
leaves are encoded by a Ray Data `map_batches` over a fixed pool of actors, each
loading the embedder once (one actor per GPU where the cluster has GPUs, else
one per CPU, each on one torch thread), and come back keyed by vector id, in
input order, into the same FAISS index and sentence rows.

What runs where. On the driver (this process): reading, hashing and chunking
(about 150 KB/s on one core here: llama-index's parser), the node tree (every
node's text), the FAISS index of all leaf vectors, the sentence rows (fp16), BM25
and the snapshot write. Across the cluster: the model's forward passes and the
sentence splitting of the new leaves, which are over 90% of the time of a CPU
ingestion. The texts of the new leaves are put into Ray's object store (spilled
to disk when it fills) once chunking is done; vectors stream back a batch at a
time and are held once, in the index. Ray is started (or joined) only when there
is something to embed: an unchanged corpus never touches Ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.config import IndexConfig
from index.ingestion.pipeline import (
    _DONE,
    IngestError,
    IngestReport,
    _Run,
    checked_roots,
    embed_leaves,
    leaf_row,
    run_locked,
)
from index.models.embedder import Embedder, SentenceTransformerEmbedder, get_embedder
from index.store.sentences import SentenceStore
from index.store.tree import Node, vector_id

log = logging.getLogger("notesrag.ingest")

INSTALL_HINT = "the ray engine needs Ray Data: pip install 'notesrag[scale]' (ray[data])"


def ray_installed() -> bool:
    """Whether Ray Data can be imported here."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


class RaySession:
    """A connection to Ray for one ingestion: started lazily, shut down only if this session started it.

    No address: a local Ray instance on this machine's cores. An address (`ray start --head`
    prints it; "auto" finds a local one): join that cluster, shipping this process's `index`
    package so the workers run the same chunk and sentence code as the driver. A process
    already connected to Ray (a notebook, a test) keeps its connection and it stays up.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be at least 1, got {num_cpus}")
        self.address, self.num_cpus = address, num_cpus
        self.started = False

    def start(self) -> Any:
        try:
            import ray
            import ray.data
        except ImportError as e:
            raise IngestError(INSTALL_HINT) from e
        if ray.is_initialized():
            return ray
        if self.address:
            package = Path(__file__).resolve().parents[1]  # the `index` package, shipped whole
            try:
                ray.init(address=self.address, logging_level=logging.WARNING,
                         runtime_env={"py_modules": [str(package)]})
            except ConnectionError as e:
                raise IngestError(
                    f"could not connect to the Ray cluster at {self.address} ({e}); a cluster with token "
                    "authentication (Ray's default) also needs RAY_AUTH_MODE=token here, and its token "
                    "in RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head node)"
                ) from e
            except (ValueError, RuntimeError) as e:  # a malformed address, another Ray version
                raise IngestError(f"could not join the Ray cluster at {self.address}: {e}") from e
        else:
            # "local": a private instance that lives as long as this run, even where RAY_ADDRESS is
            # set or another `ray start` runs here (ray.init() would join that); its start-up
            # warnings are noise
            ray.init(address="local", num_cpus=self.num_cpus or len(os.sched_getaffinity(0)),
                     include_dashboard=False, logging_level=logging.ERROR)
        self.started = True
        return ray

    def stop(self) -> None:
        if self.started:
            import ray

            ray.shutdown()  # on a cluster: disconnects this driver; the cluster stays up
            self.started = False


async def ingest_ray(
    paths: Sequence[str | Path],
    index_dir: str | Path,
    config: IndexConfig | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    embedder: Embedder | None = None,
    strict: bool = False,
    rebuild: bool = False,
    progress: bool = False,
    on_progress: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """`index.ingestion.pipeline.ingest`, embedding on Ray: the same snapshot, the same errors.

    `address`: a Ray cluster to join (else a local instance is started, and stopped after).
    `actors`: the size of the embedding actor pool (default: the cluster's GPUs, or its CPUs;
    CPU actors where `config.device` is "cpu"; never more actors than batches to embed).
    `embedder`: the driver's copy, used only for the model's name and dimension; the actors
    load `config.model` themselves (the driver loads it on the CPU when none is given).
    """
    config = config or IndexConfig()
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be at least 1, got {actors}")
    roots = checked_roots(paths)
    # the CPU: a local GPU is the actors'; the driver needs only the name and the dimension
    emb = embedder if embedder is not None else await asyncio.to_thread(get_embedder, config.model, "cpu",
                                                                         config.embed_backend)
    index_dir = Path(index_dir)
    session = RaySession(address)
    try:
        return await run_locked(index_dir, lambda: _RayRun(roots, index_dir, config, emb, strict, rebuild,
                                                           progress, on_progress, session, actors))
    finally:
        await asyncio.to_thread(session.stop)


def ingest_ray_sync(paths: Sequence[str | Path], index_dir: str | Path, config: IndexConfig | None = None,
                    **kwargs: Any) -> IngestReport:
    """`ingest_ray` for callers without an event loop."""
    return asyncio.run(ingest_ray(paths, index_dir, config, **kwargs))


class _RayRun(_Run):
    def __init__(self, roots: list[Path], index_dir: Path, config: IndexConfig, embedder: Embedder,
                 strict: bool, rebuild: bool, progress: bool,
                 on_progress: Callable[[IngestReport], None] | None, session: RaySession,
                 actors: int | None) -> None:
        super().__init__(roots, index_dir, config, embedder, strict, rebuild, progress, on_progress)
        self.session, self.actors = session, actors
        self.report.engine = "ray"  # with its actors once they start

    async def _embed_stage(self, inp: asyncio.Queue[object]) -> None:
        # Ray Data takes a finished list of blocks, so the stage waits for chunking to end;
        # the leaves are the tree's own nodes, not copies.
        leaves: list[Node] = []
        while (item := await inp.get()) is not _DONE:
            assert isinstance(item, list)
            leaves.extend(item)
        if not leaves:
            return  # nothing new: Ray is not even started
        self._set_stage("starting ray")
        # On the event loop's thread, not a worker thread: there (the main thread of a CLI) Ray
        # can install its SIGTERM handler. Every other stage has finished; the loop has nothing
        # else to do while Ray starts.
        ray = self.session.start()
        batches, sent = await self._in(self._embed_pool, self._submit, ray, leaves)
        self._set_stage("embedding on ray")
        got: list[np.ndarray] = []
        while (ids := await self._in(self._embed_pool, self._take, batches)) is not None:
            got.append(ids)
            self.report.leaves_embedded += len(ids)
            self._tick()
        back = np.sort(np.concatenate(got)) if got else np.zeros(0, np.int64)
        if not np.array_equal(back, np.sort(sent)):
            raise IngestError(f"Ray returned {len(back)} leaf vectors ({len(np.unique(back))} distinct) "
                              f"for {len(sent)} leaves sent")

    # -- in the embedding thread -------------------------------------------------------
    def _submit(self, ray: Any, leaves: list[Node]) -> tuple[Iterator[dict[str, np.ndarray]], np.ndarray]:
        import pyarrow as pa
        from ray.util.debug import log_once

        resources = ray.cluster_resources()
        gpus = 0.0 if self.config.device == "cpu" else float(resources.get("GPU", 0))
        slots = gpus or float(resources.get("CPU", 1))
        rows = self.config.batch_size or (256 if gpus else 32)  # the embedder's own default batch
        blocks = -(-len(leaves) // rows)
        # no more actors than batches: each loads the model, and an idle one is that cost for nothing
        actors = min(self.actors or max(1, int(slots)), blocks)
        # more actors than devices share them (fractions) rather than wait forever for a slot
        share = min(1.0, slots / actors)
        self.report.engine = f"ray, {actors} {'GPU' if gpus else 'CPU'} actor{'s' * (actors > 1)}"
        log.info("embedding %d leaves on %s", len(leaves), self.report.engine)
        # One block per batch: the pool balances blocks, and progress comes back per batch.
        refs = []
        for i in range(0, len(leaves), rows):
            vid, start, text, body_at = zip(*(leaf_row(n) for n in leaves[i:i + rows]), strict=True)
            refs.append(ray.put(pa.table({"id": pa.array(vid, pa.int64()), "start": pa.array(start, pa.int64()),
                                          "text": pa.array(text, pa.large_string()),
                                          "body_at": pa.array(body_at, pa.int64())})))
        sent = np.array([vector_id(n.id) for n in leaves], dtype=np.int64)
        ds = ray.data.from_arrow_refs(refs)
        ctx = ds.context  # this dataset's own copy of the DataContext
        ctx.execution_options.preserve_order = True  # FAISS gets the leaves in the asyncio order
        ctx.enable_progress_bars = False  # the CLI's bar reports embedded leaves
        log_once("ray_data_progress_manager_disabled")  # ... and needs no warning that Ray's are off
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        compute = ray.data.ActorPoolStrategy(size=actors)
        device = "cuda" if gpus else "cpu"  # an actor sees only the GPU it was given
        ds = ds.map_batches(
            _EncodeLeaves, compute=compute, batch_size=rows, batch_format="numpy", zero_copy_batch=True,
            fn_constructor_kwargs={"model": self.config.model, "device": device,
                                   "batch_size": self.config.batch_size,
                                   "expect": (self.embedder.model_name, self.embedder.dim),
                                   "sentence_vectors": self.config.sentence_vectors,
                                   "backend": self.config.embed_backend},
            **({"num_gpus": share} if gpus else {"num_cpus": share}),
        )
        return iter(ds.iter_batches(batch_size=None, batch_format="numpy")), sent

    def _take(self, batches: Iterator[dict[str, np.ndarray]]) -> np.ndarray | None:
        """Add the next batch of vectors that came back; its leaf ids, or None at the end."""
        try:
            b = next(batches, None)
        except Exception as e:  # a task or an actor failed (Ray has retried what it retries)
            raise IngestError(f"embedding on Ray failed: {type(e).__name__}: {_last_line(e)}") from e
        if b is None:
            return None
        leaf = b["leaf"]
        sent = ~leaf
        self._add_embedded(b["id"][leaf], np.ascontiguousarray(b["vector"][leaf], np.float32),
                           SentenceStore(b["id"][sent], b["start"][sent], b["end"][sent], b["vector"][sent]))
        ids: np.ndarray = b["id"][leaf]
        return ids


def _last_line(e: BaseException) -> str:
    """The gist of a Ray error: its message ends with the worker's own exception."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else ""


class _EncodeLeaves:
    """A Ray Data actor: loads the embedder once; turns a batch of leaves into leaf and sentence vectors.

    Output rows: one per leaf (`leaf` true; `id` its vector id), then one per sentence (`id` its
    leaf's vector id, `start`/`end` its span in the source file), each with its `vector`.
    """

    def __init__(self, model: str | None, device: str, batch_size: int | None, expect: tuple[str, int],
                 sentence_vectors: str = "pooled", backend: str = "auto") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # one actor per core: threads would only wait for each other
        self.embedder = get_embedder(model, device, backend, workers=1 if device == "cpu" else None)
        if device == "cpu" and isinstance(self.embedder, SentenceTransformerEmbedder):  # torch's own threads
            import torch

            torch.set_num_threads(1)
        if (self.embedder.model_name, self.embedder.dim) != tuple(expect):
            raise IngestError(f"a Ray worker loaded model {self.embedder.model_name!r} (dim {self.embedder.dim}), "
                              f"the driver {expect[0]!r} (dim {expect[1]})")
        self.batch_size = batch_size or getattr(self.embedder, "default_batch_size", 32)
        self.sentence_vectors = sentence_vectors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = list(zip(batch["id"].tolist(), batch["start"].tolist(), batch["text"].tolist(),
                        batch["body_at"].tolist(), strict=True))
        leaf_ids, leaf_vecs, sentences = embed_leaves(self.embedder, rows, self.batch_size, self.sentence_vectors)
        n, m = len(rows), len(sentences)
        none = np.full(n, -1, np.int64)
        return {"id": np.concatenate([leaf_ids, sentences.leaf]),
                "leaf": np.arange(n + m) < n,
                "start": np.concatenate([none, sentences.start]),
                "end": np.concatenate([none, sentences.end]),
                "vector": np.concatenate([leaf_vecs, sentences.vectors.astype(np.float32)])}

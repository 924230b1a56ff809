"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "notesrag_request_seconds", "HTTP request latency by route", ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.embed_seconds = Histogram(
            "notesrag_embed_seconds", "Query embedding time, batching wait included", buckets=_LATENCY_BUCKETS,
            registry=r)
        self.embed_batch_size = Histogram(
            "notesrag_embed_batch_size", "Questions per encoder call", buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r)
        self.rerank_batch_size = Histogram(
            "notesrag_rerank_batch_size", "Requests per cross-encoder call", buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r)
        self.retrieval_seconds = Histogram(
            "notesrag_retrieval_seconds", "Retrieval time (FAISS, BM25, fusion, merge)", ["mode"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.answer_seconds = Histogram(
            "notesrag_answer_seconds", "Answer time by answerer", ["answerer"], buckets=_LATENCY_BUCKETS,
            registry=r)
        self.cache = Counter("notesrag_answer_cache_total", "Answer cache look-ups", ["result"], registry=r)
        self.answerer_fallbacks = Counter(
            "notesrag_answerer_fallbacks_total", "LLM answers that fell back to the extractive answer",
            ["reason"], registry=r)
        self.ingest_jobs = Counter("notesrag_ingest_jobs_total", "Ingest jobs by outcome", ["status"], registry=r)
        self.ingest_files = Counter("notesrag_ingest_files_total", "Files seen by ingest jobs", ["outcome"],
                                    registry=r)
        self.ingest_leaves_embedded = Counter(
            "notesrag_ingest_leaves_embedded_total", "Leaf chunks embedded by ingest jobs", registry=r)
        self.snapshot_swaps = Counter("notesrag_snapshot_swaps_total", "Snapshots loaded", registry=r)
        self.index_files = Gauge("notesrag_index_files", "Source files in the served snapshot", registry=r)
        self.index_nodes = Gauge("notesrag_index_nodes", "Nodes (all levels) in the served snapshot", registry=r)
        self.index_leaves = Gauge("notesrag_index_leaves", "Leaves (vectors) in the served snapshot", registry=r)
        self.index_sentences = Gauge("notesrag_index_sentences", "Sentence vectors in the served snapshot",
                                     registry=r)
        self.index_bytes = Gauge("notesrag_index_bytes", "Size on disk of the served snapshot", registry=r)
        self.feedback = Counter("notesrag_feedback_total", "Answer ratings received (a replaced rating counts again)",
                                ["rating", "snapshot"], registry=r)
        self.ready = Gauge("notesrag_ready", "1 when an index is loaded", registry=r)
        self.unserved_change_age = Gauge(
            "notesrag_unserved_change_age_seconds", "Age of the oldest corpus change the watcher saw "
            "and the served snapshot does not hold yet (0: none; always 0 without NOTESRAG_WATCH)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

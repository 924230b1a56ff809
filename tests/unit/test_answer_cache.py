"""The per-snapshot cache of answer units: the same answers with it as without it, bounded, and
gone with its snapshot (a hot swap to a changed note answers from the new text)."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest

from index.answer import extractive
from index.answer.extractive import extract_answer, section_cache, section_cache_info

ROOT = Path(__file__).resolve().parents[2]


def _questions(n: int) -> list[str]:
    rows = [json.loads(x) for x in (ROOT / "data" / "questions.jsonl").read_text().splitlines() if x.strip()]
    return [r["question"] for r in rows][:n]


def _asked(retriever, questions):  # type: ignore[no-untyped-def]
    """(question, its vector, its hits) of each question: retrieved once, answered many times."""
    vectors = retriever.embed_queries(questions)
    return [(q, v, retriever.search(q, k=5, query_vector=v)) for q, v in zip(questions, vectors, strict=True)]


def _answers(snapshot, asked, **kw):  # type: ignore[no-untyped-def]
    out = []
    for q, qv, hits in asked:
        a = extract_answer(q, qv, hits, snapshot, **kw)
        out.append((a.text, a.answerable, a.confidence, [(c.node_id, c.start, c.end) for c in a.citations]))
    return out


def test_cached_answers_are_the_answers_without_the_cache(notes_retriever, reranker) -> None:  # type: ignore[no-untyped-def]
    snap = notes_retriever.snapshot
    asked = _asked(notes_retriever, _questions(40))
    try:
        section_cache(snap, 0)
        plain = _answers(snap, asked)
        plain_ce = _answers(snap, asked[:6], reranker=reranker)
        info = section_cache_info(snap)
        assert info is not None and info.currsize == 0
        section_cache(snap)
        cold = _answers(snap, asked)
        warm = _answers(snap, asked)
        warm_ce = _answers(snap, asked[:6], reranker=reranker)
        info = section_cache_info(snap)
        assert info is not None and info.currsize > 0 and info.hits >= len(asked)  # the second pass hits
    finally:
        section_cache(snap)
    assert cold == plain and warm == plain and warm_ce == plain_ce
    assert sum(a for _, a, _, _ in plain) > len(asked) // 2  # they are answers, not all "not covered"


def test_the_cache_is_bounded(notes_retriever) -> None:  # type: ignore[no-untyped-def]
    snap = notes_retriever.snapshot
    asked = _asked(notes_retriever, _questions(10))
    try:
        section_cache(snap, 2)
        small = _answers(snap, asked)
        info = section_cache_info(snap)
        assert info is not None and info.maxsize == 2 and info.currsize == 2 and info.misses > 2
        section_cache(snap, 0)
        assert small == _answers(snap, asked)
    finally:
        section_cache(snap)
    with pytest.raises(ValueError, match="section cache size must be >= 0, got -1"):
        section_cache(snap, -1)


NOTE = """\
# Optimizers

## Warmup

{line}
"""
BEFORE = "Warmup raises the learning rate linearly over the first thousand steps of training."
AFTER = "Warmup holds the learning rate at a tenth of its peak for the first two epochs of training."


@pytest.mark.slow
def test_a_swap_to_a_changed_note_answers_from_the_new_text(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from index import Retriever, ingest_sync, load_snapshot

    corpus, index_dir = tmp_path / "notes", tmp_path / "index"
    corpus.mkdir()
    note = corpus / "opt.md"
    q = "What does warmup do to the learning rate?"

    def ask(snapshot):  # type: ignore[no-untyped-def]
        r = Retriever(snapshot, embedder)
        qv = r.embed_queries([q])[0]
        return extract_answer(q, qv, r.search(q, k=5, query_vector=qv), snapshot)

    note.write_text(NOTE.format(line=BEFORE), encoding="utf-8")
    ingest_sync([corpus], index_dir, embedder=embedder)
    old = load_snapshot(index_dir)
    assert BEFORE in ask(old).text
    info = section_cache_info(old)
    assert info is not None and info.currsize >= 1

    note.write_text(NOTE.format(line=AFTER), encoding="utf-8")
    ingest_sync([corpus], index_dir, embedder=embedder)
    new = load_snapshot(index_dir)
    assert new.version != old.version
    a = ask(new)
    assert AFTER in a.text and BEFORE not in a.text
    assert BEFORE in ask(old).text  # a request still on the old snapshot keeps its own units

    # the cache holds its snapshot weakly: dropped, the snapshot and its units are gone
    gone, key = weakref.ref(old), id(old)
    gc.collect()  # what earlier tests left unreachable goes first, so below only `old` can go
    held = len(extractive._WORK)
    assert key in extractive._WORK
    del old
    gc.collect()
    assert gone() is None and key not in extractive._WORK and len(extractive._WORK) == held - 1
    assert AFTER in ask(new).text

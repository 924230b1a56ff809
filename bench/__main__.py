"""`python -m bench` (or `make bench`): every benchmark, one report in bench/results/latest.md."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata as md
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"
PACKAGES = ("torch", "sentence-transformers", "faiss-cpu", "onnxruntime", "bm25s", "llama-index-core", "fastapi",
            "uvicorn", "ray", "pymilvus", "milvus-lite")


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for p in PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            versions.append(f"{p} {md.version(p)}")
    return [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}",
            f"- {', '.join(versions)}"]


SECTIONS = (
    ("Level dictionary (bench.tree)", "bench.tree", {}),
    # About 3 minutes: every contender, Ray included, at 0.25 MB.
    ("Ingestion, 0.25 MB (bench.ingest)", "bench.ingest", {"sizes": [0.25]}),
    # About 4 minutes: the goal's ratio (end to end against raw encode of the same texts) at 1 MB.
    ("Ingestion, 1 MB (bench.ingest)", "bench.ingest", {"sizes": [1.0], "contenders": ["raw+sentences", "ours"]}),
    ("HTTP query load (bench.serve)", "bench.serve", {}),
    # About 2 minutes here. The 1M-vector rows take about 10 minutes more on 2 cores (an HNSW
    # build of 7-8 minutes): `python -m bench.faiss_scale --sizes 1000000`.
    ("FAISS at scale (bench.faiss_scale)", "bench.faiss_scale",
     {"sizes": (10_000, 100_000), "queries": 500, "ef_search": (64, 128, 256)}),
    # About 2 minutes here: three backends loaded side by side, one round, a labelled-set run each.
    ("Query encoder backends (bench.encoders)", "bench.encoders", {"rounds": 1, "leaves": 128}),
    # About 2 minutes here, most of it writing 100k rows into Milvus Lite and its slow searches.
    ("Vector backends: FAISS and Milvus (bench.vector_backends)", "bench.vector_backends",
     {"sizes": (10_000, 100_000), "queries": 200, "budget_s": 20.0}),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="comma-separated module names, e.g. bench.tree")
    a = ap.parse_args()
    out = ["# notesrag benchmarks", "", *machine(), ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for title, module, kwargs in SECTIONS:
        if a.only and module not in a.only.split(","):
            continue
        mod = importlib.import_module(module)
        t = time.perf_counter()
        lines = mod.main(**kwargs)
        out += [f"## {title}", "", *lines, "", f"({time.perf_counter() - t:.0f} s)", ""]
        print("\n".join(out[-len(lines) - 4:]), flush=True)
        RESULTS.write_text("\n".join(out))  # after each section: a run cut short keeps what it measured
    out.append(f"(all sections: {time.perf_counter() - started:.0f} s)")
    RESULTS.write_text("\n".join(out))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()

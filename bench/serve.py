"""Query load on the HTTP service, side by side with a plain llama-index retriever.

Starts `notesrag serve` on loopback (its own process, default settings except
the rate limit, which would refuse a load test), drives it with N concurrent
workers, each on its own keep-alive connection, for a bounded number of
`/v1/ask` requests per concurrency level, and reports p50/p95/p99 latency, requests/s and errors. In the same
run, the same questions go through llama-index's `VectorStoreIndex` retriever
in-process over the same leaf chunks with the same model, and through the
raw encoder. Each load row is followed at once by a short llama-index run,
and its ratio is taken against that run, so both were measured under the same
background load. Requests send `Cache-Control: no-cache` (every one does the
full work) except in the row marked cached. The client runs on the same
machine as the server, so both share its cores: each row gives the client's
own CPU time a request too. `--clients raw` (the default) writes HTTP/1.1 on
asyncio streams, about a seventh of httpx's CPU a request (0.4 against 2.7 ms here); `--clients
raw,httpx` takes every row with each, in turn.

One server runs per backend, all started before the first row and loaded in turn
at each concurrency level. A backend is `ENCODER[/RERANKER]`: the question encoder
(`NOTESRAG_EMBED_BACKEND`) and optionally the cross-encoder (`NOTESRAG_RERANKER`).
The default, "auto,auto/none", is the served defaults with the packaged
cross-encoder on and off. A row with the cross-encoder on is followed by
llama-index's retriever plus the same cross-encoder on its top 5 leaves (what a
`SentenceTransformerRerank` postprocessor does); a row with it off, by the
retriever alone. The llama-index baseline embeds with torch, as
`HuggingFaceEmbedding` would. Each row also gives the server process's CPU time
(user + system, from /proc) per request, which other jobs on a shared host move less
than they move its rate. After the run: each server's RSS and open file descriptors.

    python -m bench.serve [--requests 300] [--concurrency 1,4,16,64] [--backends auto,auto/none]

A backend may also set any server setting: `auto@rerank_workers=1` is the served defaults
with NOTESRAG_RERANK_WORKERS=1, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
LLAMA = "llama-index VectorStoreIndex retriever, in-process"
LLAMA_CE = "llama-index retriever + the same cross-encoder on its top 5, in-process"


@dataclass
class Row:
    contender: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_s: float | None = None  # the server process's CPU seconds (user + system) over the row
    client_cpu_s: float | None = None  # this process's CPU seconds over the row (the load client)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs)) - 1))]


def questions() -> list[str]:
    lines = (ROOT / "data" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def reranks(backend: str) -> bool:
    """Whether the server of `backend` runs the cross-encoder (the default reranker is on)."""
    return backend.split("@")[0].partition("/")[2] not in ("none",)


def server_env(backend: str) -> dict[str, str]:
    """The settings a backend spec `ENCODER[/RERANKER][@SETTING=VALUE...]` sets: "auto/none"
    is the served defaults without the cross-encoder, "auto@rerank_workers=1" with one
    cross-encoder thread (NOTESRAG_RERANK_WORKERS), so two servers that differ in one
    setting are measured side by side."""
    spec, *extra = backend.split("@")
    encoder, _, reranker = spec.partition("/")
    env = {"NOTESRAG_EMBED_BACKEND": encoder}
    if reranker:  # a plain "auto" keeps the server's default (the packaged cross-encoder)
        env["NOTESRAG_RERANKER"] = reranker
    for item in extra:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"a backend's setting must be NAME=VALUE, got {item!r} in {backend!r}")
        env[f"NOTESRAG_{name.upper()}"] = value
    return env


def start_server(index_dir: Path, port: int, log: Path, backend: str = "auto") -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTESRAG_INDEX_DIR": str(index_dir), "NOTESRAG_RATE_LIMIT_PER_MINUTE": "0",
           **server_env(backend)}
    env.pop("NOTESRAG_API_KEYS", None)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--index-dir", str(index_dir)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_servers(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM every server at once, then wait up to 15 s for each; kill what is still up."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                if (await c.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server never became ready")


CLIENTS = ("raw", "httpx")


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a POST, its status and body.

    The load client shares the server's cores, so its own cost is part of what a row measures;
    httpx spends about 3 ms of CPU a request here, several times what this costs."""

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{head}\r\n"
                     .encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            key, value = key.strip().lower(), value.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "transfer-encoding":
                chunked = "chunked" in value
            elif key == "connection":
                close = value == "close"
        if chunked:
            parts = []
            while size := int((await reader.readline()).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readline()
            await reader.readline()
            data = b"".join(parts)
        else:
            data = await reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            with contextlib.suppress(OSError):
                await self.streams[1].wait_closed()
            self.streams = None


async def load(url: str, qs: list[str], concurrency: int, total: int, cached: bool = False,
               offset: int = 0, backend: str | None = None, client: str = "raw") -> Row:
    """`total` requests of `/v1/ask` from `concurrency` workers, each on its own keep-alive
    connection, through `client`: "raw" (`RawConnection`) or "httpx" (one AsyncClient)."""
    import httpx

    if client not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {client!r}")
    headers = {} if cached else {"Cache-Control": "no-cache"}
    latencies: list[float] = []
    errors = 0
    next_i = 0

    async def drive(ask: Callable[[str], Awaitable[bool]]) -> None:
        """Take the next question until `total` are taken; `ask` sends one, True when it got a 200."""
        nonlocal next_i, errors
        while next_i < total:
            question = qs[(next_i + offset) % len(qs)]
            next_i += 1
            t = time.perf_counter()
            ok = await ask(question)
            latencies.append((time.perf_counter() - t) * 1e3)
            errors += not ok

    async def raw_worker() -> None:
        conn = RawConnection(url)

        async def ask(question: str) -> bool:
            body = json.dumps({"question": question}).encode()
            try:
                status, _ = await asyncio.wait_for(conn.post("/v1/ask", body, headers), 30)
                return status == 200
            except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                await conn.close()
                return False

        try:
            await drive(ask)
        finally:
            await conn.close()

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if client == "raw":
        await asyncio.gather(*(raw_worker() for _ in range(concurrency)))
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
            async def ask(question: str) -> bool:
                try:
                    r = await c.post("/v1/ask", json={"question": question}, headers=headers)
                    return r.status_code == 200
                except httpx.HTTPError:
                    return False

            await asyncio.gather(*(drive(ask) for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    label = "notesrag /v1/ask (cached answers)" if cached else "notesrag /v1/ask over HTTP"
    if backend:
        label += f", {backend}"
    if client != "raw":
        label += f" ({client} client)"
    return Row(label, concurrency, total, errors, seconds, latencies, client_cpu_s=time.process_time() - cpu0)


class Baselines:
    """The raw encoder and a plain llama-index retriever, one question at a time, in this process."""

    def __init__(self, index_dir: Path) -> None:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        from bench.llama_adapter import adapter
        from index import get_embedder, load_snapshot
        from index.ingestion.pipeline import embed_text
        from service.app import configure_threads
        from service.settings import Settings

        # the same thread counts as the server (Settings.torch_threads, faiss_threads), so the
        # comparison is between pipelines, not between thread settings
        configure_threads(Settings(_env_file=None))  # type: ignore[call-arg]
        from index.models.reranker import packaged_reranker

        emb = get_embedder(backend="torch")  # as HuggingFaceEmbedding runs it, not our int8 export
        snap = load_snapshot(index_dir)
        nodes = [TextNode(text=embed_text(snap.tree[i]), id_=i) for i in snap.tree.leaves()]
        retriever = VectorStoreIndex(nodes, embed_model=adapter(emb)).as_retriever(similarity_top_k=5)
        cross = packaged_reranker()

        def reranked(q: str) -> object:
            hits = retriever.retrieve(q)
            scores = cross.score(q, [h.node.get_content() for h in hits])
            return [h for _, h in sorted(zip(scores, hits, strict=True), key=lambda p: -p[0])]

        self.contenders: dict[str, Callable[[str], object]] = {
            "raw encoder, one question": lambda q: emb.encode([q]), LLAMA: retriever.retrieve,
            LLAMA_CE: reranked}
        self.rows: dict[str, list[Row]] = {k: [] for k in self.contenders}
        for fn in self.contenders.values():
            for q in questions()[:5]:
                fn(q)  # warm up

    def measure(self, qs: list[str], n: int, offset: int = 0, only: tuple[str, ...] = ()) -> dict[str, Row]:
        out = {}
        for label, fn in self.contenders.items():
            if only and label not in only:
                continue
            lat = []
            t0 = time.perf_counter()
            for i in range(n):
                t = time.perf_counter()
                fn(qs[(i + offset) % len(qs)])
                lat.append((time.perf_counter() - t) * 1e3)
            out[label] = Row(label, 1, n, 0, time.perf_counter() - t0, lat)
            self.rows[label].append(out[label])
        return out

    def pooled(self) -> list[Row]:
        """All measurements of each baseline as one row."""
        return [Row(label, 1, sum(r.requests for r in rows), 0, sum(r.seconds for r in rows),
                    [x for r in rows for x in r.latencies_ms]) for label, rows in self.rows.items() if rows]



def table(rows: list[tuple[Row, Row]], baselines: list[Row], rss: dict[str, tuple[float, float]],
          fds: dict[str, int] | None = None) -> list[str]:
    lines = ["| contender | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | server CPU ms a request "
             "| client CPU ms a request | llama-index counterpart, measured right after | its q/s | its p50 ms "
             "| its p99 ms | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, base in rows:
        cpu = f"{1e3 * r.cpu_s / r.requests:.1f}" if r.cpu_s is not None and r.requests else ""
        client = f"{1e3 * r.client_cpu_s / r.requests:.1f}" if r.client_cpu_s is not None and r.requests else ""
        lines.append(f"| {r.contender} | {r.concurrency} | {r.requests} | {r.errors} | {r.rate:.1f} | "
                     f"{r.pct(50):.1f} | {r.pct(95):.1f} | {r.pct(99):.1f} | {cpu} | {client} | "
                     f"{'+ cross-encoder' if base.contender == LLAMA_CE else 'retriever'} | {base.rate:.1f} | "
                     f"{base.pct(50):.1f} | {base.pct(99):.1f} | {r.rate / base.rate:.2f} |")
    for b in baselines:
        lines.append(f"| {b.contender} (all runs pooled) | 1 | {b.requests} | 0 | {b.rate:.1f} | "
                     f"{b.pct(50):.1f} | {b.pct(95):.1f} | {b.pct(99):.1f} | | | | | | | |")
    lines.append("")
    for backend, (now, peak) in rss.items():
        fd = f", {fds[backend]} open file descriptors" if fds and backend in fds else ""
        lines.append(f"server process after the run, {backend}: RSS {now:.0f} MB (peak {peak:.0f} MB){fd}")
    return lines


async def run(levels: list[int], n: int, index_dir: Path | None, base_n: int = 60,
              backends: tuple[str, ...] = ("auto", "auto/none"), clients: tuple[str, ...] = ("raw",)) -> list[str]:
    """Each load row is followed at once by the in-process baselines, so that the ratio compares
    measurements taken under the same background load (this machine is shared)."""
    qs = questions()
    load_avg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if index_dir is None:
            from index.ingestion.pipeline import ingest

            index_dir = Path(tmp) / "index"
            await ingest([ROOT / "data" / "notes"], index_dir)
        urls: dict[str, str] = {}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        rows: list[tuple[Row, Row]] = []
        try:
            for b in backends:
                port = free_port()
                urls[b] = f"http://127.0.0.1:{port}"
                logs[b] = Path(tmp) / f"server-{b.replace('/', '-').replace('=', '-')}.log"
                procs[b] = start_server(index_dir, port, logs[b], b)
            baselines = Baselines(index_dir)
            for b in backends:
                await wait_ready(urls[b], procs[b])
                await load(urls[b], qs, 4, 40)  # warm-up: threads, allocator, first batches
            plan = [(c, False) for c in levels] + [(16, True)]  # the last row: answers cached above
            for (c, cached), client in itertools.product(plan, clients):
                for b in backends:
                    cpu = cpu_seconds(procs[b].pid)
                    row = await load(urls[b], qs, c, n, cached=cached, offset=c,
                                     backend=b if len(backends) > 1 else None, client=client)
                    row.cpu_s = cpu_seconds(procs[b].pid) - cpu
                    label = LLAMA_CE if reranks(b) else LLAMA
                    # the cross-encoder baseline costs ~10x a question: fewer, as many seconds
                    m = max(10, base_n // 4) if label == LLAMA_CE else base_n
                    rows.append((row, baselines.measure(qs, m, offset=c, only=(label,))[label]))
            rss = {b: rss_mb(p.pid) for b, p in procs.items()}
            fds = {b: open_fds(p.pid) for b, p in procs.items()}
        finally:
            stop_servers(*procs.values())
        if any(r.errors for r, _ in rows):
            for log in logs.values():
                print(log.read_text()[-3000:], file=sys.stderr)
    return [*table(rows, baselines.pooled(), rss, fds),
            f"load average (1 min): {load_avg:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"]


def main(levels: list[int] | None = None, n: int = 300, index_dir: Path | None = None,
         backends: tuple[str, ...] = ("auto", "auto/none"), clients: tuple[str, ...] = ("raw",)) -> list[str]:
    return asyncio.run(run(levels or [1, 4, 16, 64], n, index_dir, backends=backends, clients=clients))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--index-dir", type=Path, help="an existing index [default: build one from data/notes]")
    ap.add_argument("--backends", default="auto,auto/none",
                    help="ENCODER[/RERANKER][@SETTING=VALUE...] per server, e.g. auto (served defaults), "
                         "auto/none, torch, auto@rerank_workers=1")
    ap.add_argument("--clients", default="raw",
                    help="load clients, comma-separated, each row once per client: raw (keep-alive HTTP/1.1 "
                         "on asyncio streams, the lightest) or httpx (one AsyncClient, as before 2 December)")
    a = ap.parse_args()
    clients = tuple(a.clients.split(","))
    if bad := [c for c in clients if c not in CLIENTS]:
        ap.error(f"--clients: unknown {', '.join(bad)} (choose from {', '.join(CLIENTS)})")
    lines = main([int(c) for c in a.concurrency.split(",")], a.requests, a.index_dir,
                 tuple(a.backends.split(",")), clients)
    print("\n".join(lines))

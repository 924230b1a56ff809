"""Soak: the highest request rate the service sustains with p99 under a bound, held for minutes.

Starts `notesrag serve` on loopback in its own process (default settings except the rate
limit; with no index given it ingests data/notes first), then:

1. probes: short open-loop runs of `/v1/ask` at fixed rates (doubling, then bisecting) to find
   the highest rate whose p99 latency stays under `--p99-ms` (250) with no errors in every
   5-second window, then a longer run at that rate (a fifth of the soak, 30 s to 2 min),
   10% lower each time it fails;
2. soak: that rate for `--minutes` (10), reporting requests served, errors, p50/p99, and the
   server's resident memory at the start and the end of the soak (growth in %).

Open loop: requests leave on a fixed schedule whatever the server does, and latency counts from
the scheduled time, so a stalled server shows up as latency, not as fewer requests. Requests send
`Cache-Control: no-cache` (every one embeds, retrieves and answers) unless `--cache`. The client
runs on the same machine and shares its cores.

    python -m bench.soak [--minutes 10] [--probe-seconds 5] [--p99-ms 250] [--index-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.serve import free_port, questions, rss_mb, start_server, wait_ready


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs)) - 1))]


@dataclass
class Run:
    rate: float
    seconds: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (scheduled second, latency ms)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, MB)

    @property
    def requests(self) -> int:
        return len(self.samples)

    def pct(self, q: float) -> float:
        return _pct([ms for _, ms in self.samples], q)

    def window_p99s(self, window_s: float = 5.0) -> list[float]:
        """The p99 of the requests scheduled in each `window_s` of the run."""
        windows: dict[int, list[float]] = {}
        for t, ms in self.samples:
            windows.setdefault(int(t // window_s), []).append(ms)
        return [_pct(windows[w], 99) for w in sorted(windows)]

    def worst_window_p99(self) -> float:
        """A queue that builds up near the end shows here even when the whole run's p99 hides it."""
        return max(self.window_p99s(), default=float("nan"))

    def ok(self, p99_ms: float) -> bool:
        return self.requests > 0 and self.errors == 0 and self.worst_window_p99() < p99_ms


async def run_at(url: str, qs: list[str], rate: float, seconds: float, *, cache: bool = False, offset: int = 0,
                 pid: int | None = None, rss_every_s: float = 0.0) -> Run:
    """`rate` requests a second for `seconds`, each sent on schedule whatever came back."""
    import httpx

    headers = {} if cache else {"Cache-Control": "no-cache"}
    out = Run(rate, seconds)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    pending: set[asyncio.Task[None]] = set()
    total = max(1, round(rate * seconds))

    async def one(c: httpx.AsyncClient, i: int, due: float) -> None:
        try:
            r = await c.post("/v1/ask", json={"question": qs[(i + offset) % len(qs)]}, headers=headers)
            error = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as e:
            error = repr(e)
        out.samples.append((due - t0, (loop.time() - due) * 1e3))
        if error is not None:
            out.errors += 1
            if len(out.first_errors) < 5:
                out.first_errors.append(error)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        t0 = loop.time()
        next_rss = 0.0
        for i in range(total):
            due = t0 + i / rate
            if pid is not None and rss_every_s and due - t0 >= next_rss:
                out.rss_mb.append((due - t0, rss_mb(pid)[0]))
                next_rss += rss_every_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(one(c, i, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        if pid is not None and rss_every_s:
            out.rss_mb.append((loop.time() - t0, rss_mb(pid)[0]))
    return out


async def find_rate(url: str, qs: list[str], p99_ms: float, probe_seconds: float, cache: bool,
                    start: float = 8.0, max_rate: float = 4000.0, max_probes: int = 12) -> tuple[float, list[Run]]:
    """The highest probed rate with p99 under `p99_ms` and no errors: doubling, then bisecting
    until the bracket is within 10%."""
    probes: list[Run] = []
    good, bad = 0.0, 0.0
    rate = start
    for i in range(max_probes):
        run = await run_at(url, qs, rate, probe_seconds, cache=cache, offset=i * 17)
        probes.append(run)
        if run.ok(p99_ms):
            good = rate
        else:
            bad = rate
        if bad and good and bad / good <= 1.1:
            break
        if not bad:
            if rate * 2 > max_rate:
                break
            rate *= 2
        else:
            rate = (good + bad) / 2 if good else rate / 2
        await asyncio.sleep(1.0)  # let the server drain between probes
    return good, probes


async def confirm_rate(url: str, qs: list[str], rate: float, p99_ms: float, seconds: float, cache: bool,
                       step: float = 0.9, tries: int = 6) -> tuple[float, list[Run]]:
    """A short probe misses a rate a little over capacity (its queue grows slowly): hold the
    rate found for longer, 10% lower each time it fails."""
    runs: list[Run] = []
    for i in range(tries):
        if not rate:
            break
        await asyncio.sleep(1.0)
        run = await run_at(url, qs, rate, seconds, cache=cache, offset=100 + i * 13)
        runs.append(run)
        if run.ok(p99_ms):
            return rate, runs
        rate *= step
    return 0.0, runs


def _row(label: str, r: Run, p99_ms: float | None = None) -> str:
    served = r.requests - r.errors
    achieved = r.requests / r.seconds if r.seconds else 0.0
    verdict = "" if p99_ms is None else f" | {r.worst_window_p99():.1f} | {'yes' if r.ok(p99_ms) else 'no'}"
    return (f"| {label} | {r.rate:.1f} | {r.seconds:.0f} | {served} | {r.errors} | {achieved:.1f} | "
            f"{r.pct(50):.1f} | {r.pct(99):.1f}{verdict} |")


async def soak(minutes: float, probe_seconds: float, p99_ms: float, index_dir: Path | None,
               cache: bool) -> list[str]:
    qs = questions()
    with tempfile.TemporaryDirectory() as tmp:
        # no index: the server ingests data/notes (its default corpus root) into a fresh folder
        index_dir = index_dir or Path(tmp) / "index"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"
        proc = start_server(index_dir, port, log)
        try:
            await wait_ready(url, proc)
            rss_ready = rss_mb(proc.pid)[0]
            await run_at(url, qs, 20, 3, cache=cache)  # warm-up: threads, allocator, first batches
            rate, probes = await find_rate(url, qs, p99_ms, probe_seconds, cache)
            # near capacity a queue builds up by chance, later the closer the rate: confirm for
            # a fifth of the soak (30 s to 2 min)
            confirm_s = min(120.0, max(30.0, 6 * probe_seconds, minutes * 60 / 5))
            rate, confirms = await confirm_rate(url, qs, rate, p99_ms, confirm_s, cache)
            probes += confirms
            if not rate:
                raise RuntimeError(f"no probed rate kept p99 under {p99_ms:g} ms: {probes[-1].first_errors}")
            await asyncio.sleep(2.0)
            run = await run_at(url, qs, rate, minutes * 60, cache=cache, offset=7, pid=proc.pid,
                               rss_every_s=max(5.0, minutes * 60 / 20))
            alive = proc.poll() is None
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if run.errors or not alive:
            print(log.read_text()[-3000:], file=sys.stderr)
    return table(probes, run, p99_ms, rss_ready, alive, cache)


def table(probes: list[Run], run: Run, p99_ms: float, rss_ready: float, alive: bool, cache: bool) -> list[str]:
    lines = [f"Probes ({probes[0].seconds:.0f} s each, open loop, "
             f"{'answer cache on' if cache else 'Cache-Control: no-cache'}):", "",
             "| run | rate req/s | s | served | errors | achieved req/s | p50 ms | p99 ms "
             f"| worst 5 s p99 ms | passed (< {p99_ms:g} ms) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(f"probe {i + 1}" if p.seconds == probes[0].seconds else f"confirm {i + 1}", p, p99_ms)
              for i, p in enumerate(probes)]
    start, end = run.rss_mb[0][1], run.rss_mb[-1][1]
    peak = max(mb for _, mb in run.rss_mb)
    lines += ["", f"Soak at the highest rate that passed ({run.rate:.1f} req/s):", "",
              "| run | rate req/s | s | served | errors | achieved req/s | p50 ms | p99 ms | worst 5 s p99 ms "
              f"| passed (< {p99_ms:g} ms) |",
              "|---|---|---|---|---|---|---|---|---|---|", _row("soak", run, p99_ms), "",
              "| server RSS when ready MB | at soak start MB | at soak end MB | peak MB | growth | server alive |",
              "|---|---|---|---|---|---|",
              f"| {rss_ready:.0f} | {start:.0f} | {end:.0f} | {peak:.0f} | {100 * (end - start) / start:+.1f}% | "
              f"{'yes' if alive else 'NO'} |"]
    within = sum(p < p99_ms for p in run.window_p99s())
    lines += ["", f"5-second windows of the soak with p99 under {p99_ms:g} ms: {within} of {len(run.window_p99s())}"]
    if run.first_errors:
        lines += ["", "First errors: " + "; ".join(run.first_errors)]
    return lines


def main(minutes: float = 10.0, probe_seconds: float = 5.0, p99_ms: float = 250.0,
         index_dir: Path | None = None, cache: bool = False) -> list[str]:
    return asyncio.run(soak(minutes, probe_seconds, p99_ms, index_dir, cache))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak [default: 10]")
    ap.add_argument("--probe-seconds", type=float, default=5.0, help="length of each rate probe [default: 5]")
    ap.add_argument("--p99-ms", type=float, default=250.0, help="the latency bound [default: 250]")
    ap.add_argument("--index-dir", type=Path, help="an existing index [default: build one from data/notes]")
    ap.add_argument("--cache", action="store_true", help="let repeated questions hit the answer cache")
    a = ap.parse_args()
    print("\n".join(main(a.minutes, a.probe_seconds, a.p99_ms, a.index_dir, a.cache)))

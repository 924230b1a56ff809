"""A real uvicorn on a free loopback port, for the API and browser tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from service.server import uvicorn_options
from service.settings import Settings


class ServerThread:
    """A real uvicorn serving `app` on a free 127.0.0.1 port, in a thread with its own loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # the service's own wire settings (read deadline, connection limit, proxies), as
        # `notesrag serve` passes them; other apps (the LLM stub) get uvicorn's defaults
        settings = getattr(getattr(app, "state", None), "settings", None)
        options = uvicorn_options(settings) if isinstance(settings, Settings) else {}
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=1, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, path: str = "/readyz", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(self.url + path).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url}{path} never answered 200")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

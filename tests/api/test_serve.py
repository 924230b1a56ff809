"""`notesrag serve` end to end in its own process: ingest when there is no index, then serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_serve_ingests_first_then_answers_on_loopback_only(tmp_path: Path) -> None:
    corpus = tmp_path / "notes"
    corpus.mkdir()
    (corpus / "loss.md").write_text("# Losses\n\n## Huber\n\nHuber loss is quadratic for small errors "
                                    "and linear for large ones.\n", encoding="utf-8")
    (corpus / "opt.md").write_text("# Optimizers\n\nAdam keeps running averages of gradients.\n", encoding="utf-8")
    index_dir = tmp_path / "index"
    port = free_port()
    env = {**os.environ, "NOTESRAG_CORPUS_ROOT": str(corpus), "NOTESRAG_API_KEYS": "", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                             "--index-dir", str(index_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.3)
        body = httpx.post(url + "/v1/ask", json={"question": "What is Huber loss?"}).json()
        assert body["answerable"] is True and Path(body["citations"][0]["source"]).name == "loss.md"
        assert (index_dir / "CURRENT").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "no index in" in out and "ingested 2 files" in out
    assert "binding to 127.0.0.1 only" in out and f"serving on http://127.0.0.1:{port}" in out



def free_port() -> int:
    """A free loopback port (closed again before the server binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_wire_protocol_reaches_worker_processes_by_name() -> None:
    """`serve --workers N` pickles uvicorn's config, protocol class included, to each worker
    (a spawned process): the class with the configured read deadline must unpickle there."""
    import pickle

    from service import server
    from service.settings import Settings

    cls = server.uvicorn_options(Settings(_env_file=None, read_timeout_s=7.5))["http"]  # type: ignore[call-arg]
    assert cls is server.read_deadline_protocol(7.5) and cls.read_timeout_s == 7.5
    data = pickle.dumps(cls)
    del server.__dict__[cls.__name__]  # as in a fresh worker process, which has not made it yet
    again = pickle.loads(data)
    assert again is not cls and again.read_timeout_s == 7.5 and issubclass(again, server.ReadDeadlineProtocol)
    h11 = server.read_deadline_protocol(0.25, h11=True)
    assert pickle.loads(pickle.dumps(h11)) is h11 and issubclass(h11, server.ReadDeadlineH11Protocol)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        server.nothing  # noqa: B018

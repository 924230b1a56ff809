"""Findings of a hostile review of the running service, each against a real uvicorn on loopback:
ingest jobs confined to the corpus root when they run, slow clients dropped, failed
authentication throttled, forwarding headers and Host checked, no secrets in start-up errors."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from notes_copies import NotesCopies

from index import IndexConfig, ingest
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app

from .conftest import ADMIN_KEY, QUERY_KEY, auth, copy_index, make_settings
from .servers import ServerThread

SECRET = "The vault combination is swordfish-4471."


def poll_job(c: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout  # generous: the machine is shared
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/ingest/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"the ingest job did not finish: {job}")


def leaks(c: httpx.Client, words: str = "vault combination swordfish") -> bool:
    """Whether a query-scope caller can find or be quoted the secret."""
    q = httpx.Client(base_url=str(c.base_url), headers=auth(QUERY_KEY))
    hits = q.get("/v1/search", params={"q": words, "k": 10}).json()["hits"]
    answer = q.post("/v1/ask", json={"question": "What is the vault combination?"}).json()
    return "swordfish" in str(hits) or "swordfish" in str(answer)


@pytest.fixture
async def hostile_corpus(tmp_path: Path, notes_copies: NotesCopies) -> tuple[Path, Path, Path]:
    """A copy of data/notes with a folder t4, its index (ingested once, put back for each test),
    and a folder outside the corpus root."""
    root, index_dir = await asyncio.to_thread(notes_copies.fresh, "hostile",
                                              {"t4/note.md": "# Tea\n\nOolong is partly oxidised tea.\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secrets.md").write_text(f"# Vault\n\n{SECRET}\n")
    return root, index_dir, outside


@pytest.fixture
def confined_server(hostile_corpus: tuple[Path, Path, Path]) -> Iterator[ServerThread]:
    root, index_dir, _ = hostile_corpus
    with ServerThread(create_app(make_settings(index_dir, corpus_root=root))) as server:
        server.wait_ready()
        yield server


def test_a_link_swapped_in_while_a_job_waits_is_not_followed(
        confined_server: ServerThread, hostile_corpus: tuple[Path, Path, Path],
        embedder: SentenceTransformerEmbedder) -> None:
    root, index_dir, outside = hostile_corpus
    with httpx.Client(base_url=confined_server.url, headers=auth(ADMIN_KEY), timeout=30) as c:
        with open(index_dir / ".lock", "w") as lock:  # another writer holds the index
            fcntl.flock(lock, fcntl.LOCK_EX)
            r = c.post("/v1/ingest", json={"paths": ["t4"]})
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 30
            while c.get(f"/v1/ingest/{r.json()['id']}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.5)  # the job has started and waits for the lock
            (root / "t4").rename(root / "t4.bak")
            os.symlink(outside, root / "t4")
            assert c.get(f"/v1/ingest/{r.json()['id']}").json()["status"] == "running"
        job = poll_job(c, r.json()["id"])
        assert job["status"] == "failed" and "t4 resolves outside the corpus root" in job["error"], job
        assert not leaks(c)

        # a link out inside a folder, swapped in the same way: skipped with a reason, not read
        os.unlink(root / "t4")
        (root / "t4.bak").rename(root / "t4")
        os.symlink(outside / "secrets.md", root / "t4" / "more.md")
        job = poll_job(c, c.post("/v1/ingest", json={"paths": ["t4"]}).json()["id"])
        assert job["status"] == "succeeded", job
        # keyed relative to the corpus root, as every path a caller of the API sees
        assert job["errors"] == {"t4/more.md": "a symbolic link that leads outside the ingested folders"}
        assert not leaks(c)
        os.unlink(root / "t4" / "more.md")


def test_what_a_snapshot_holds_from_outside_the_root_leaves_at_the_next_ingest(
        confined_server: ServerThread, hostile_corpus: tuple[Path, Path, Path],
        embedder: SentenceTransformerEmbedder) -> None:
    root, index_dir, outside = hostile_corpus
    # a snapshot written by an earlier version that followed the swapped link: it holds the
    # outside files under their own (resolved) names
    asyncio.run(ingest([root, outside], index_dir, IndexConfig(), embedder=embedder))
    with httpx.Client(base_url=confined_server.url, headers=auth(ADMIN_KEY), timeout=30) as c:
        assert c.post("/v1/reload").status_code == 200
        assert leaks(c)  # the premise: served before the fix's ingest
        job = poll_job(c, c.post("/v1/ingest", json={"paths": ["."]}).json()["id"])
        assert job["status"] == "succeeded" and job["progress"]["files_removed"] == 1, job
        assert not leaks(c)
        # an ingest of a folder inside the root also drops them (they are never carried)
        asyncio.run(ingest([root, outside], index_dir, IndexConfig(), embedder=embedder))
        assert c.post("/v1/reload").status_code == 200 and leaks(c)
        job = poll_job(c, c.post("/v1/ingest", json={"paths": ["t4"]}).json()["id"])
        assert job["status"] == "succeeded" and job["progress"]["files_removed"] == 1, job
        assert not leaks(c)


# -- the wire: slow clients, connection limit --------------------------------------------------

def stalled(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    return s


def closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed `s` within `seconds`, and what it sent before."""
    s.settimeout(seconds)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


@pytest.fixture(scope="module")
def wire_server(tmp_path_factory: pytest.TempPathFactory, notes_index: Path) -> Iterator[ServerThread]:
    index_dir = tmp_path_factory.getbasetemp() / "wire-index"
    if not (index_dir / "CURRENT").exists():  # data/notes, as the session indexed it
        shutil.rmtree(index_dir, ignore_errors=True)
        copy_index(notes_index, index_dir)
    settings = make_settings(index_dir, read_timeout_s=1.5, keep_alive_s=1.0, max_connections=16,
                             auth_failure_burst=10, auth_failures_per_minute=6)
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        yield server


def test_a_stalled_or_trickling_client_is_dropped_and_others_are_served(wire_server: ServerThread) -> None:
    port = wire_server.port
    # a request head that stops before its blank line: 408, then closed
    head = stalled(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    # a body that stops after 10 of its 100 bytes: closed
    body = stalled(port, b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"question")
    # 10 clients sending their request head a byte at a time, 0.3 s apart (15 s for the head)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: slow-loris\r\n\r\n"
    tricklers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
    dropped: dict[int, bool] = {}

    def trickle() -> None:
        for i in range(len(request)):
            for n, s in enumerate(tricklers):
                if n in dropped:
                    continue
                try:
                    s.sendall(request[i:i + 1])
                except OSError:
                    dropped[n] = True
            if len(dropped) == len(tricklers):
                return
            time.sleep(0.3)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    statuses = []
    with httpx.Client(base_url=wire_server.url, headers=auth(QUERY_KEY), timeout=30) as c:
        for i in range(8):  # normal requests meanwhile, on one keep-alive connection
            statuses.append(c.get("/v1/search", params={"q": f"attention heads {i}"}).status_code)
            time.sleep(0.2)
    assert statuses == [200] * 8
    closed, sent = closed_within(head, 15)
    assert closed and sent.startswith(b"HTTP/1.1 408 "), sent
    assert closed_within(body, 15)[0]
    sender.join(30)
    for n, s in enumerate(tricklers):  # the server closed them long before the head was sent
        assert n in dropped or closed_within(s, 10)[0], n
        s.close()
    head.close()
    body.close()
    # an idle keep-alive connection is closed too (after keep_alive_s)
    idle = stalled(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    closed, sent = closed_within(idle, 15)
    assert closed and sent.startswith(b"HTTP/1.1 200 "), sent


def test_past_the_connection_limit_requests_get_503_until_stalled_clients_are_dropped(
        wire_server: ServerThread) -> None:
    holders = [stalled(wire_server.port, b"GET /healthz HTTP/1.1\r\n") for _ in range(16)]
    time.sleep(0.2)
    try:
        r = httpx.get(wire_server.url + "/healthz", timeout=10)
        assert r.status_code == 503, r.text
    finally:
        for s in holders:
            closed_within(s, 15)
            s.close()
    assert httpx.get(wire_server.url + "/healthz", timeout=10).status_code == 200


# -- failed authentication --------------------------------------------------------------------

def test_wrong_keys_are_throttled_per_client_address(wire_server: ServerThread) -> None:
    wrong = auth("wrong-key-0123456789")
    with httpx.Client(base_url=wire_server.url, timeout=30) as c:
        codes = [c.get("/v1/search", params={"q": "loss"}, headers=wrong) for _ in range(20)]
        assert [r.status_code for r in codes] == [401] * 10 + [429] * 10
        last = codes[-1]
        assert last.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(last.headers["Retry-After"]) <= 10
        # the address is blocked whatever key it sends now: a 429 tells nothing about the key
        assert c.get("/v1/search", params={"q": "loss"}, headers=auth(QUERY_KEY)).status_code == 429
    # another client address is not locked out
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=wire_server.url, transport=other, timeout=30) as c:
        assert c.get("/v1/search", params={"q": "loss"}, headers=wrong).status_code == 401
        assert c.get("/v1/search", params={"q": "loss"}, headers=auth(QUERY_KEY)).status_code == 200


# -- loopback mode (no keys): forwarding headers and Host -------------------------------------

@pytest.fixture(scope="module")
def open_servers(wire_server: ServerThread, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[ServerThread, ServerThread]]:
    """Two servers without keys and with a rate limit of 5 at once: one trusts no proxy (the
    default), one trusts 127.0.0.1."""
    index_dir = tmp_path_factory.getbasetemp() / "wire-index"
    common: dict[str, Any] = {"api_keys": "", "rate_limit_per_minute": 6, "rate_limit_burst": 5}
    with ServerThread(create_app(make_settings(index_dir, **common))) as plain, \
            ServerThread(create_app(make_settings(index_dir, trusted_proxies="127.0.0.1", **common))) as proxied:
        plain.wait_ready()
        proxied.wait_ready()
        yield plain, proxied


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(open_servers: tuple[ServerThread, ServerThread]
                                                             ) -> None:
    plain, proxied = open_servers

    def codes(server: ServerThread, forwarded: list[str]) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return [c.get("/v1/search", params={"q": "dropout"}, headers={"X-Forwarded-For": f}).status_code
                    for f in forwarded]

    rotating = [f"203.0.113.{i}" for i in range(10)]
    # no trusted proxy: one caller whatever the header says, limited after 5
    assert codes(plain, rotating) == [200] * 5 + [429] * 5
    # behind a trusted proxy each forwarded address is a caller of its own
    assert codes(proxied, rotating) == [200] * 10
    assert codes(proxied, ["198.51.100.7"] * 7) == [200] * 5 + [429] * 2


def test_without_keys_only_loopback_host_names_are_served(open_servers: tuple[ServerThread, ServerThread]) -> None:
    plain, _ = open_servers
    with httpx.Client(base_url=plain.url, timeout=30) as c:
        for host in ("attacker.example", f"attacker.example:{plain.port}", "127.0.0.1.nip.io", ""):
            for method, path, body in (("POST", "/v1/ingest", {"paths": ["."]}), ("POST", "/v1/reload", None),
                                       ("GET", "/readyz", None)):
                r = c.request(method, path, json=body, headers={"Host": host})
                assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed", (host, path)
        for host in (f"127.0.0.1:{plain.port}", f"localhost:{plain.port}", "localhost", "[::1]:8000"):
            assert c.get("/readyz", headers={"Host": host}).status_code == 200, host
        # past the Host check (a 422 for the body, or the rate limit the other test used up; a valid
        # body would start a job on the shared index)
        r = c.post("/v1/ingest", json={"paths": 1}, headers={"Host": "localhost"})
        assert r.status_code in (422, 429), r.text


# -- start-up errors --------------------------------------------------------------------------

def test_start_up_errors_name_the_setting_never_the_secret(tmp_path: Path) -> None:
    from .conftest import ROOT

    admin, llm_key = "valid-admin-key-4471:admin", "sk-live-0123456789abcdef"
    env = {**os.environ, "NOTESRAG_API_KEYS": f"{admin},short:query", "NOTESRAG_LLM_API_KEY": llm_key,
           "NOTESRAG_PORT": "99999", "NOTESRAG_INDEX_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    for cmd in ([sys.executable, "-m", "service.cli", "serve"],
                [sys.executable, "-m", "uvicorn", "service.app:app_from_env", "--factory", "--port", "0"]):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "valid-admin-key" not in out and "4471" not in out and "sk-live" not in out, out
        assert "Traceback" not in out and "input_value" not in out, out
        lines = [ln for ln in out.splitlines() if ln.startswith("error: invalid setting")]
        assert lines == ["error: invalid setting NOTESRAG_PORT: Input should be less than or equal to 65535",
                         "error: invalid setting NOTESRAG_API_KEYS: API keys must be at least 8 characters long"], out
    # a value error raised after the fields (the model's own checks) names no value either
    env.update(NOTESRAG_API_KEYS=admin, NOTESRAG_PORT="8000", NOTESRAG_LLM_BASE_URL="ftp://me:hunter2@llm")
    proc = subprocess.run([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: invalid setting settings: llm_base_url must start with http:// or https://"), proc.stderr


# -- requests that must be refused, not read generously ---------------------------------------

def test_ambiguous_framing_long_paths_and_loose_types_are_refused(wire_server: ServerThread) -> None:
    body = b'{"question": "What is Huber loss?"}'
    smuggle = (b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + QUERY_KEY.encode() +
               b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
               b"\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}".encode() + b"\r\n" + body +
               b"\r\n0\r\n\r\n")
    s = stalled(wire_server.port, smuggle)
    closed, sent = closed_within(s, 15)
    s.close()
    # refused by the HTTP parser (httptools), or by BodyLimitMiddleware behind h11
    assert sent.startswith(b"HTTP/1.1 400 ") and b'"bad_request"' in sent and b"Transfer-Encoding" in sent, sent
    assert closed  # and the connection is not reused
    # from an address of its own: the throttle test may have blocked 127.0.0.1 on this server
    own = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(base_url=wire_server.url, headers=auth(QUERY_KEY), transport=own, timeout=30) as c:
        r = c.get("/" + "a" * 10_000)
        assert r.status_code == 404 and len(r.content) < 400, len(r.content)
        assert r.json()["error"]["message"].endswith("... (10001 characters)")
        for bad in (True, "5", 5.5):
            r = c.post("/v1/ask", json={"question": "What is Huber loss?", "top_k": bad})
            assert r.status_code == 422 and "top_k" in r.text, (bad, r.text)
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Huber?"}],
                                                  "top_k": True})
        assert r.status_code == 422, r.text
        assert c.post("/v1/ask", json={"question": "What is Huber loss?", "top_k": 3}).status_code == 200

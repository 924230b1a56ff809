"""Stateless replicas: two `notesrag serve` processes on two loopback ports over one snapshot
directory keep answering while a separate `notesrag ingest` writes a new snapshot, and each
swaps to it on its own (docker-compose.yml runs the same shape behind nginx)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from live_service import QUERY_KEY, ServiceProcess

from index import current_path

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
QUERY = {"Authorization": f"Bearer {QUERY_KEY}"}
FACT = "The capital of Zanzibaria is Quuxville."
QUESTION = "What is the capital of Zanzibaria?"


class Load(threading.Thread):
    """Questions to every replica in turn until stopped; every response is kept."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.stop = threading.Event()
        self.results: list[tuple[str, int, str | None]] = []  # (url, status, snapshot)
        self.errors: list[str] = []

    def run(self) -> None:
        clients = [httpx.Client(base_url=u, headers=QUERY, timeout=30) for u in self.urls]
        i = 0
        try:
            while not self.stop.is_set():
                c = clients[i % len(clients)]
                body = {"question": QUESTION if i % 2 else "What is Huber loss?"}
                try:
                    r = c.get("/v1/search", params={"q": body["question"], "k": 3}) if i % 3 == 0 \
                        else c.post("/v1/ask", json=body, headers={"Cache-Control": "no-cache"})
                    snap = r.json().get("snapshot") if r.status_code == 200 else None
                    self.results.append((str(c.base_url), r.status_code, snap))
                    if r.status_code != 200:
                        self.errors.append(f"{c.base_url} {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.errors.append(f"{c.base_url} {type(e).__name__}: {e}")
                i += 1
        finally:
            for c in clients:
                c.close()


def test_two_replicas_swap_to_a_new_snapshot_without_a_failed_request(tmp_path: Path,
                                                                     notes_copy: tuple[Path, Path]) -> None:
    corpus, index_dir = notes_copy  # a copy of data/notes and its index
    replicas = [ServiceProcess(index_dir, corpus, tmp_path / f"replica-{n}.log") for n in range(2)]
    load: Load | None = None
    try:
        replicas[0].start().wait_ready()
        replicas[1].start().wait_ready()
        old = current_path(index_dir)
        assert old is not None
        for r in replicas:
            assert r.wait_ready()["snapshot"] == old.name
        urls = [r.url for r in replicas]
        assert len(set(urls)) == 2

        load = Load(urls)
        load.start()
        time.sleep(1.0)
        (corpus / "09-geography.md").write_text(f"# Geography\n\n## Zanzibaria\n\n{FACT}\n", encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "ingest", str(corpus), "--index-dir", str(index_dir),
             "--no-progress"], cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=300,
            env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr[-2000:]  # (cwd: the replicas' empty folder)
        new = current_path(index_dir)
        assert new is not None and new != old

        deadline = time.monotonic() + 30
        while not all(r.wait_ready()["snapshot"] == new.name for r in replicas):
            assert time.monotonic() < deadline, [r.wait_ready()["snapshot"] for r in replicas]
            time.sleep(0.1)
        time.sleep(1.0)  # more load on the new snapshot
        load.stop.set()
        load.join(30)

        assert not load.errors, load.errors[:5]
        for url in urls:
            served = [snap for u, _, snap in load.results if u.rstrip("/") == url]
            assert len(served) >= 5, f"{url} answered {len(served)} requests"
            # each replica answered from the old snapshot, then from the new one, never back
            assert served[0] == old.name and served[-1] == new.name, (served[0], served[-1])
            switch = served.index(new.name)
            assert set(served[:switch]) == {old.name} and set(served[switch:]) == {new.name}

        for r in replicas:  # the new fact is served by both
            with httpx.Client(base_url=r.url, headers=QUERY, timeout=30) as c:
                body = c.post("/v1/ask", json={"question": QUESTION}).json()
                assert "Quuxville" in body["answer"], body
                assert body["snapshot"] == new.name
                assert any(cit["source"].endswith("09-geography.md") for cit in body["citations"])
    finally:
        if load is not None:
            load.stop.set()
            load.join(30)
        for r in replicas:
            r.stop()

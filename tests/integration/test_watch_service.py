"""`notesrag serve` with NOTESRAG_WATCH=true in its own process, real file changes in a temporary
corpus: an edited note's new text is answered and a deleted note is no longer cited within 10 s;
GET /v1/documents lists what is indexed and what was skipped; the staleness gauge is exported."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from live_service import ADMIN_KEY, QUERY_KEY, ServiceProcess

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUERY = {"Authorization": f"Bearer {QUERY_KEY}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServiceProcess, Path]]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "loss.md").write_text("# Loss\n\nHuber loss uses L2 for small errors and L1 for large ones.\n")
    (notes / "trees.md").write_text("# Trees\n\nLightGBM grows trees leaf-wise and bins features.\n")
    (notes / "blob.md").write_bytes(b"\x00\x01binary")
    svc = ServiceProcess(tmp_path / "index", notes, tmp_path / "serve.log", watch="true",
                         watch_debounce_ms="300").start()
    try:
        svc.wait_ready()
        yield svc, notes
    finally:
        svc.stop()


def within(seconds: float, check: Callable[[], bool], what: str, svc: ServiceProcess) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < seconds, f"not within {seconds} s: {what}\n{svc.tail()}"
        time.sleep(0.2)
    return time.monotonic() - t0


def ask(svc: ServiceProcess, question: str) -> dict:  # type: ignore[type-arg]
    r = httpx.post(svc.url + "/v1/ask", json={"question": question}, headers=QUERY, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_watching_server_serves_edits_and_deletions(served: tuple[ServiceProcess, Path]) -> None:
    svc, notes = served
    docs = httpx.get(svc.url + "/v1/documents", headers=ADMIN, timeout=10).json()["documents"]
    by_path = {d["path"]: d for d in docs}
    assert set(by_path) == {"blob.md", "loss.md", "trees.md"}  # relative to the corpus root
    assert by_path["blob.md"]["status"] == "skipped" and by_path["blob.md"]["reason"] == "binary file"
    assert by_path["loss.md"]["status"] == "indexed" and by_path["loss.md"]["chunks"] >= 1
    assert by_path["loss.md"]["indexed_at"] > 0 and len(by_path["loss.md"]["sha256"]) == 64
    one = httpx.get(svc.url + "/v1/documents/loss.md", headers=ADMIN, timeout=10)
    assert one.status_code == 200 and one.json()["sha256"] == by_path["loss.md"]["sha256"]
    assert httpx.get(svc.url + "/v1/documents/nope.md", headers=ADMIN, timeout=10).status_code == 404
    assert httpx.get(svc.url + "/v1/documents", headers=QUERY, timeout=10).status_code == 403

    (notes / "loss.md").write_text("# Loss\n\nHuber loss is quadratic near zero and linear far from zero.\n")
    within(10, lambda: "quadratic" in " ".join(c["quote"] for c in ask(svc, "What is Huber loss?")["citations"]),
           "the edited note answered", svc)

    def trees_cited() -> bool:
        return any(c["source"].endswith("trees.md") for c in ask(svc, "How does LightGBM grow trees?")["citations"])

    assert trees_cited()
    (notes / "trees.md").unlink()
    within(10, lambda: not trees_cited(), "the deleted note no longer cited", svc)
    metrics = httpx.get(svc.url + "/metrics", timeout=10).text
    gauge = [ln for ln in metrics.splitlines() if ln.startswith("notesrag_unserved_change_age_seconds ")]
    assert gauge == ["notesrag_unserved_change_age_seconds 0.0"]
    names = {d["path"] for d in httpx.get(svc.url + "/v1/documents", headers=ADMIN, timeout=10).json()["documents"]}
    assert names == {"blob.md", "loss.md"}

"""Hot swap under load: 2,000 `/v1/ask` requests from concurrent clients against `notesrag serve`
on loopback while five ingest jobs change a note and the server swaps snapshots. No request
fails, and each answer comes wholly from the one snapshot it names: its contexts and citations
are nodes of that snapshot's tree, with that snapshot's text."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from live_service import ADMIN_KEY, ServiceProcess

from index import NodeTree, load_snapshot

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
TOTAL = 2000
CLIENTS = 8
SWAPS = 5
CHANGED = "06-rag.md"
ZANZIBARIA = "What is the capital of Zanzibaria?"
CAPITAL = re.compile(r"Quuxville(\d+)")
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def questions() -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "data" / "questions.jsonl").read_text().splitlines() if line]
    return [r["question"] for r in rows if r["answerable"]][:30]


def version_text(original: str, k: int) -> str:
    return original + f"\n\n## Zanzibaria\n\nThe capital of Zanzibaria is Quuxville{k}, a city of copper bridges.\n"


def check_from_one_snapshot(body: dict[str, Any], tree: NodeTree, k: int) -> None:
    """Every context and citation is a node of `tree` with the text the response shows."""
    for ctx in body["contexts"]:
        node = tree.by_id.get(ctx["node_id"])
        assert node is not None, f"context {ctx['node_id']} is not in {body['snapshot']}"
        assert (node.text, node.start, node.end) == (ctx["text"], ctx["start"], ctx["end"])
        assert node.source.endswith("/" + ctx["source"]), (node.source, ctx["source"])  # relative to the root
    for cit in body["citations"]:
        node = tree.by_id.get(cit["node_id"])
        assert node is not None, f"citation {cit['node_id']} is not in {body['snapshot']}"
        assert node.text[cit["start"] - node.start:cit["end"] - node.start] == cit["quote"]
    # the changed note names the version's capital: never another version's
    named = {int(n) for n in CAPITAL.findall(body["answer"] + " ".join(c["text"] for c in body["contexts"]))}
    assert named <= {k}, (body["snapshot"], k, named)


async def test_five_swaps_under_a_steady_stream_of_questions(tmp_path: Path, notes_copy: tuple[Path, Path]) -> None:
    corpus, index_dir = notes_copy  # a copy of data/notes and its index
    original = (corpus / CHANGED).read_text(encoding="utf-8")
    # Without the cross-encoder: this is about swaps under a dense stream of questions, and 2,000
    # answers each scored by the cross-encoder (~50 ms a question on two cores) would not fit
    # the minute the stream is given.
    service = ServiceProcess(index_dir, corpus, tmp_path / "service.log", reranker="none")
    try:
        first = service.start().wait_ready()
        trees: dict[str, tuple[NodeTree, int]] = {}  # snapshot -> (its tree, its version of the note)

        def remember(snapshot: str, k: int) -> None:
            # loaded at once: the index directory keeps only the three newest snapshots
            trees[snapshot] = (load_snapshot(index_dir / snapshot).tree, k)

        remember(str(first["snapshot"]), 0)
        pool = questions()
        bodies: list[dict[str, Any]] = []
        failures: list[str] = []
        done = 0
        issued = 0
        swap_times: list[tuple[int, float]] = []  # (requests answered when it landed, seconds)

        async def client() -> None:
            nonlocal issued, done
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(base_url=service.url, headers=ADMIN, timeout=30, limits=limits) as c:
                while issued < TOTAL:
                    i = issued
                    issued += 1
                    question = ZANZIBARIA if i % 5 == 0 else pool[i % len(pool)]
                    # a quarter skip the answer cache, so the stream keeps the encoder and retrieval busy
                    headers = {"Cache-Control": "no-cache"} if i % 4 == 1 else {}
                    try:
                        r = await c.post("/v1/ask", json={"question": question}, headers=headers)
                    except httpx.HTTPError as e:
                        failures.append(f"request {i}: {e!r}")
                        continue
                    finally:
                        done += 1
                    if r.status_code != 200:
                        failures.append(f"request {i}: {r.status_code} {r.text[:200]}")
                        continue
                    bodies.append({**r.json(), "question": question})
                    await asyncio.sleep(0.002)

        async def swapper() -> None:
            async with httpx.AsyncClient(base_url=service.url, headers=ADMIN, timeout=30) as c:
                for k in range(1, SWAPS + 1):
                    # spread over the stream: swap k once k/(SWAPS+2) of the requests are answered
                    while done < TOTAL * k // (SWAPS + 2):
                        await asyncio.sleep(0.01)
                    t0 = time.monotonic()
                    (corpus / CHANGED).write_text(version_text(original, k), encoding="utf-8")
                    r = await c.post("/v1/ingest", json={"paths": [CHANGED]})
                    assert r.status_code == 202, r.text
                    job = r.json()
                    while job["status"] not in ("succeeded", "failed"):
                        await asyncio.sleep(0.02)
                        job = (await c.get(f"/v1/ingest/{job['id']}")).json()
                    assert job["status"] == "succeeded", job
                    assert job["progress"]["files_changed"] == 1 and job["snapshot"] not in trees
                    await asyncio.to_thread(remember, job["snapshot"], k)
                    # the job swaps the server to its snapshot before the next swap starts
                    while (await c.get("/readyz")).json()["snapshot"] != job["snapshot"]:
                        await asyncio.sleep(0.01)
                    swap_times.append((done, time.monotonic() - t0))

        await asyncio.wait_for(asyncio.gather(swapper(), *(client() for _ in range(CLIENTS))), timeout=60)
        assert not failures, failures[:5]
        assert len(bodies) == TOTAL and len(swap_times) == SWAPS
        assert swap_times[-1][0] < TOTAL - 100, f"the last swap came after the stream: {swap_times}"
        served: dict[str, int] = {}
        for body in bodies:
            assert body["snapshot"] in trees, f"{body['snapshot']} is not a snapshot of this run"
            tree, k = trees[body["snapshot"]]
            check_from_one_snapshot(body, tree, k)
            if body["question"] == ZANZIBARIA and k > 0:
                assert f"Quuxville{k}" in body["answer"], body["answer"]
            served[body["snapshot"]] = served.get(body["snapshot"], 0) + 1
        # old and new snapshots were all served: the initial one, each swap's, and the last
        assert set(served) == set(trees), (served, list(trees))
    finally:
        service.kill()

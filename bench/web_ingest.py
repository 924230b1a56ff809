"""Website ingestion: a site of N pages served on 127.0.0.1 by the standard library's static file
server (Last-Modified and If-Modified-Since), ingested by its sitemap, then again with nothing
changed. The goal: the second run under 10% of the first. The model is loaded before timing.

    python -m bench.web_ingest --pages 50
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from index import get_embedder
from index.ingestion.sources import ingest_site_sync

WORDS = ("gradient", "kernel", "tokeniser", "attention", "shard", "replica", "cache", "schema", "vector")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def write_site(root: Path, pages: int, words: int = 300) -> None:
    (root / "docs").mkdir(parents=True)
    for i in range(pages):
        body = " ".join(f"{WORDS[(i * 7 + j) % len(WORDS)]}{j % 13}" for j in range(words))
        (root / "docs" / f"p{i}.html").write_text(
            f"<html><body><h1>Page {i}</h1><h2>Part A</h2><p>{body}.</p><h2>Part B</h2><p>{body[::-1]}.</p>"
            "</body></html>")
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")


def main(pages: int = 50) -> list[str]:
    emb = get_embedder()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        write_site(site, pages)
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
        base = f"http://127.0.0.1:{server.server_address[1]}"
        locs = "".join(f"<url><loc>{base}/docs/p{i}.html</loc></url>" for i in range(pages))
        (site / "sitemap.xml").write_text(f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>')
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            index_dir = Path(tmp) / "index"
            t = time.perf_counter()
            first = ingest_site_sync(base + "/sitemap.xml", index_dir, embedder=emb)
            t_first = time.perf_counter() - t
            t = time.perf_counter()
            again = ingest_site_sync(base + "/sitemap.xml", index_dir, embedder=emb)
            t_again = time.perf_counter() - t
        finally:
            server.shutdown()
            server.server_close()
    assert first.files_new == pages and again.files_unchanged == pages and again.leaves_embedded == 0
    return ["| pages | leaves embedded | first run s | unchanged re-run s | ratio |", "| --- | --- | --- | --- | --- |",
            f"| {pages} | {first.leaves_embedded} | {t_first:.2f} | {t_again:.3f} | {t_again / t_first:.1%} |"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=50)
    print("\n".join(main(ap.parse_args().pages)))

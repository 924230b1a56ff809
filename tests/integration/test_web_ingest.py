"""Ingesting a docs website served by the test on 127.0.0.1: by its sitemap (50 pages, incremental
by ETag and Last-Modified, a page gone from the sitemap removed) and by crawling from a start page
(same host only, a page limit, robots.txt honoured). The real packaged model embeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from static_site import Site, serve

from index import Retriever, load_snapshot
from index.ingestion.sources import ingest_site_sync, load_state

TOPICS = ("gradient clipping", "batch normalisation", "dropout", "weight decay", "attention heads",
          "tokenisers", "beam search", "learning-rate warm-up", "mixed precision", "data loaders")


def page(i: int, extra: str = "") -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"<html><head><title>Page {i}</title><script>var x = 1;</script></head><body>"
            f"<nav><a href='/index.html'>home</a></nav><h1>Guide {i}</h1>"
            f"<p>Notes on {topic}, part {i}.</p><h2>Details {i}</h2><p>{extra or f'Setting {i} of {topic}.'}</p>"
            "</body></html>")


@pytest.fixture
def site() -> Site:
    s = Site()
    with serve(s):
        s.put("/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
        for i in range(50):
            path = f"/docs/p{i}.html"
            s.put(path, page(i, "The Zorblax protocol retries every 250 milliseconds." if i == 7 else ""))
            if i % 2:
                s.etag_paths.add(path)
        s.sitemap([f"/docs/p{i}.html" for i in range(50)])
        yield s


def test_sitemap_ingest_incremental_and_removal(site: Site, tmp_path: Path, embedder) -> None:
    index_dir = tmp_path / "index"
    url = site.base + "/sitemap.xml"
    first = ingest_site_sync(url, index_dir, embedder=embedder)
    assert first.files_new == 50 and not first.skipped
    snap = load_snapshot(index_dir)
    p7 = site.base + "/docs/p7.html"
    assert sorted(snap.manifest.files) == sorted(site.base + f"/docs/p{i}.html" for i in range(50))
    hit = Retriever(snap, embedder).search("How often does the Zorblax protocol retry?", k=1)[0]
    assert hit.source == p7 and "250 milliseconds" in hit.text
    assert hit.heading_path[0] == "Guide 7"  # HTML headings give heading paths
    assert "var x" not in " ".join(snap.tree[i].text for i in snap.tree.of_source(p7))

    # nothing changed: every page answered 304 to its validator, nothing parsed or embedded
    site.log.clear()
    again = ingest_site_sync(url, index_dir, embedder=embedder)
    assert again.files_unchanged == 50 and again.leaves_embedded == 0 and not again.changed
    assert again.snapshot == first.snapshot
    page_statuses = [s for p, s in site.log if p.startswith("/docs/")]
    assert page_statuses == [304] * 50

    # one page edited (one with an ETag, one with Last-Modified), one gone from the sitemap
    site.put("/docs/p3.html", page(3, "Quaternion pooling averages the four nearest cells."))
    site.etag_paths.add("/docs/p3.html")
    site.put("/docs/p4.html", page(4, "Hexagonal tiling halves the seam count."), mtime=1_800_000_000.0)
    site.sitemap([f"/docs/p{i}.html" for i in range(50) if i != 9])
    third = ingest_site_sync(url, index_dir, embedder=embedder)
    assert (third.files_changed, third.files_removed, third.files_unchanged) == (2, 1, 47)
    snap = load_snapshot(index_dir)
    assert site.base + "/docs/p9.html" not in snap.manifest.files
    assert not snap.tree.of_source(site.base + "/docs/p9.html")
    retriever = Retriever(snap, embedder)
    assert retriever.search("What does quaternion pooling average?", k=1)[0].source == site.base + "/docs/p3.html"
    assert retriever.search("What halves the seam count?", k=1)[0].source == site.base + "/docs/p4.html"
    assert site.base + "/docs/p9.html" not in load_state(index_dir)


def test_crawl_same_host_page_limit_and_robots(site: Site, tmp_path: Path, embedder) -> None:
    links = "".join(f"<a href='docs/p{i}.html#top'>{i}</a>" for i in range(3))
    site.put("/index.html", "<html><body><h1>Home</h1><p>Welcome to the docs.</p>"
             "<a href='/private/secret.html'>secret</a><a href='http://example.invalid/x.html'>out</a>"
             f"{links}<a href='/missing.html'>gone</a><a href='/data.bin'>data</a></body></html>")
    site.put("/private/secret.html", page(99, "Secret launch codes."))
    site.put("/data.bin", b"\x00\x01", "application/octet-stream")
    report = ingest_site_sync(site.base + "/index.html", tmp_path / "index", embedder=embedder, max_pages=6)
    snap = load_snapshot(tmp_path / "index")
    got = set(snap.manifest.files)
    assert got == {site.base + "/index.html", *(site.base + f"/docs/p{i}.html" for i in range(3))}
    assert report.skipped == {site.base + "/missing.html": "HTTP 404",
                              site.base + "/data.bin": "not HTML or PDF (content-type application/octet-stream)"}
    assert not site.statuses("/private/secret.html")  # robots.txt disallows it: never requested
    # the limit counts pages fetched, breadth first
    small = ingest_site_sync(site.base + "/index.html", tmp_path / "small", embedder=embedder, max_pages=2)
    assert small.files_seen == 2 and small.files_new == 2


def test_robots_txt_missing_allows_failing_stops(site: Site, tmp_path: Path, embedder) -> None:
    from index import IngestError

    del site.files["/robots.txt"]  # a 404: everything allowed
    assert ingest_site_sync(site.base + "/docs/p1.html", tmp_path / "a", embedder=embedder,
                            max_pages=1).files_new == 1
    site.fail["/robots.txt"] = 503  # RFC 9309: unreachable means everything disallowed
    with pytest.raises(IngestError, match=r"robots.txt answered 503: not crawling"):
        ingest_site_sync(site.base + "/docs/p1.html", tmp_path / "b", embedder=embedder)
    assert not site.statuses("/docs/p1.html")[1:]  # only the first run fetched the page
    with pytest.raises(ValueError, match="http:// or https://"):
        ingest_site_sync("ftp://127.0.0.1/x", tmp_path / "c", embedder=embedder)


def test_failing_page_keeps_what_the_snapshot_had(site: Site, tmp_path: Path, embedder) -> None:
    url = site.base + "/sitemap.xml"
    site.sitemap(["/docs/p1.html", "/docs/p2.html"])
    ingest_site_sync(url, tmp_path / "index", embedder=embedder)
    site.fail["/docs/p2.html"] = 500
    report = ingest_site_sync(url, tmp_path / "index", embedder=embedder)
    assert report.skipped == {site.base + "/docs/p2.html": "HTTP 500"} and report.files_removed == 0
    assert site.base + "/docs/p2.html" in load_snapshot(tmp_path / "index").manifest.files


def test_cli_ingests_a_site_by_url(site: Site, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    site.sitemap(["/docs/p1.html", "/docs/p2.html", "/private/x.html"])
    result = CliRunner().invoke(app, ["ingest", site.base + "/sitemap.xml", "--index-dir", str(tmp_path / "i"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ingested 2 files (2 new" in result.output  # /private/ is disallowed by robots.txt
    assert set(load_snapshot(tmp_path / "i").manifest.files) == {site.base + "/docs/p1.html",
                                                                 site.base + "/docs/p2.html"}
    mixed = CliRunner().invoke(app, ["ingest", site.base + "/sitemap.xml", str(tmp_path)])
    assert mixed.exit_code == 2 and "not both" in mixed.output

"""Sources beyond a folder: a docs website, by its sitemap or by crawling from a start URL.

`ingest_site(url, index_dir)` fetches the pages through httpx and runs them through the same
pipeline as files (`pipeline._Run`, with fetching in place of discovery and reading): a page's
source is its URL (fragment dropped), its text the HTML's visible text with its headings
(`documents.html_to_text`), so chunks carry heading paths as Markdown notes do.

- A URL whose path ends in `.xml` is a sitemap (`<urlset>`, or a `<sitemapindex>` of them);
  any other URL is a start page, from which links to the same host are followed breadth-first.
  Only pages on the URL's own scheme and host are taken, at most `max_pages` of them.
- robots.txt is honoured for the `notesrag` user agent: a disallowed page is not fetched;
  a robots.txt that answers 404 allows everything; one that cannot be read (5xx, a network
  error) stops the run (RFC 9309 says: assume everything is disallowed).
- Incremental: the ETag and Last-Modified of each page are kept in `web.json` in the index
  directory and sent back (If-None-Match, If-Modified-Since); a 304, or a 200 whose body has
  the hash the snapshot has, keeps the page's nodes without parsing or embedding. A page of
  the site that the snapshot has and this run did not list (gone from the sitemap, or no
  longer linked) leaves every index; pages of other sites and files are kept.
- A page that fails (an HTTP error, not HTML or PDF, too large, a redirect off the site) is
  skipped with the reason, keeping what the snapshot had of it. A PDF linked by the site is
  read like a PDF file (`pdf.pdf_text`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from index.config import IndexConfig
from index.ingestion.documents import SourceFile, html_to_text
from index.ingestion.pdf import PdfSkipped, pdf_text
from index.ingestion.pipeline import _DONE, IngestError, IngestReport, _Run, run_locked
from index.models.embedder import Embedder, get_embedder

log = logging.getLogger("notesrag.ingest")

USER_AGENT = "notesrag"
STATE = "web.json"  # validators (ETag, Last-Modified), hashes and links of fetched pages
MAX_PAGES = 1000
MAX_SITEMAPS = 50  # sitemaps read through one sitemap index
CONCURRENCY = 8
HTML_TYPES = ("text/html", "application/xhtml+xml")
PDF_TYPES = ("application/pdf",)


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def site_prefix(url: str) -> str:
    """`scheme://host[:port]/`: what every page of the site's URL starts with."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def normalise(url: str) -> str:
    """A page's URL as a source: no fragment, an empty path written `/`."""
    url = urldefrag(url)[0]
    parts = urlsplit(url)
    return url if parts.path else url + "/"


def same_site(url: str, prefix: str) -> bool:
    return normalise(url).startswith(prefix)


# -- what was fetched ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Page:
    """One page as the read stage takes it: `src` new or changed text, else `unchanged` or `skip`."""

    url: str
    src: SourceFile | None = None
    unchanged: bool = False
    skip: str | None = None


@dataclass
class PageState:
    sha256: str
    etag: str | None = None
    last_modified: str | None = None
    links: list[str] = field(default_factory=list)


def load_state(index_dir: Path) -> dict[str, PageState]:
    try:
        raw = json.loads((index_dir / STATE).read_text(encoding="utf-8"))
        return {url: PageState(**rec) for url, rec in raw.items()}
    except (OSError, ValueError, TypeError):  # none yet, or unreadable: fetch everything in full
        return {}


def save_state(index_dir: Path, state: dict[str, PageState]) -> None:
    """Written whole to a temporary file, flushed, then renamed over the old one."""
    tmp = index_dir / f".{STATE}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({u: s.__dict__ for u, s in sorted(state.items())}, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, index_dir / STATE)


def sitemap_urls(xml: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of a sitemap or sitemap index, in document order."""
    root = ET.fromstring(xml)
    tag = root.tag.rsplit("}", 1)[-1]
    if tag not in ("urlset", "sitemapindex"):
        raise ValueError(f"not a sitemap (root element <{tag}>)")
    locs = [(el.text or "").strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "loc"]
    locs = [u for u in locs if u]
    return (locs, []) if tag == "urlset" else ([], locs)


def page_links(html: str, base: str) -> list[str]:
    """Absolute http(s) URLs the page links to, fragments dropped, in order, each once."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    base_tag = soup.find("base", href=True)
    if base_tag is not None:
        base = urljoin(base, str(base_tag["href"]))
    out: dict[str, None] = {}
    for a in soup.find_all("a", href=True):
        url = urljoin(base, str(a["href"]).strip())
        if is_url(url):
            out.setdefault(normalise(url), None)
    return list(out)


class SiteFetcher:
    """Fetches a site's pages with conditional requests; plain results, no index work."""

    def __init__(self, url: str, client: httpx.AsyncClient, state: dict[str, PageState],
                 known: dict[str, str], max_pages: int, max_bytes: int) -> None:
        self.start = normalise(url)
        self.prefix = site_prefix(self.start)
        self.client, self.state, self.known = client, state, known  # known: url -> sha256 in the snapshot
        self.max_pages, self.max_bytes = max_pages, max_bytes
        self.robots = RobotFileParser()
        self.new_state: dict[str, PageState] = {}
        self.requests = 0
        self._sem = asyncio.Semaphore(CONCURRENCY)

    async def fetch(self) -> list[Page]:
        await self._read_robots()
        if urlsplit(self.start).path.lower().endswith(".xml"):
            urls = await self._from_sitemap()
            return list(await asyncio.gather(*(self._page(u) for u in urls)))
        return await self._crawl()

    # -- robots.txt and the sitemap -------------------------------------------------------
    async def _read_robots(self) -> None:
        url = self.prefix + "robots.txt"
        try:
            r = await self._get(url)
        except httpx.HTTPError as e:
            raise IngestError(f"cannot read {url} ({type(e).__name__}): not crawling") from e
        if r.status_code >= 500:
            raise IngestError(f"{url} answered {r.status_code}: not crawling")
        self.robots.parse(r.text.splitlines() if r.status_code == 200 else [])

    def _allowed(self, url: str) -> bool:
        return self.robots.can_fetch(USER_AGENT, url)

    async def _from_sitemap(self) -> list[str]:
        pages: dict[str, None] = {}
        todo, read = [self.start], 0
        while todo and read < MAX_SITEMAPS and len(pages) < self.max_pages:
            url = todo.pop(0)
            read += 1
            try:
                r = await self._get(url)
                r.raise_for_status()
                locs, nested = sitemap_urls(r.content)
            except (httpx.HTTPError, ValueError, ET.ParseError) as e:
                raise IngestError(f"cannot read the sitemap {url}: {e}") from e
            todo += [u for u in nested if same_site(u, self.prefix)]
            for u in locs:
                u = normalise(u)
                if same_site(u, self.prefix) and self._allowed(u):
                    pages.setdefault(u, None)
        return list(pages)[: self.max_pages]

    async def _crawl(self) -> list[Page]:
        """Breadth-first over same-site links from the start page, up to max_pages pages."""
        out: list[Page] = []
        queued = {self.start}
        frontier = [self.start] if self._allowed(self.start) else []
        while frontier and len(out) < self.max_pages:
            level = frontier[: self.max_pages - len(out)]
            frontier = frontier[len(level):]
            fetched = await asyncio.gather(*(self._page(u) for u in level))
            for page in fetched:
                out.append(page)
                st = self.new_state.get(page.url)
                for link in st.links if st else []:
                    if link not in queued and same_site(link, self.prefix) and self._allowed(link):
                        queued.add(link)
                        frontier.append(link)
        return out

    # -- one page ---------------------------------------------------------------------------
    async def _get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async with self._sem:
            self.requests += 1
            return await self.client.get(url, headers=headers)

    async def _page(self, url: str) -> Page:
        old = self.state.get(url)
        # a validator is only worth sending for the text the snapshot holds
        if old is not None and self.known.get(url) != old.sha256:
            old = None
        headers: dict[str, str] = {}
        if old is not None and old.etag:
            headers["If-None-Match"] = old.etag
        if old is not None and old.last_modified:
            headers["If-Modified-Since"] = old.last_modified
        try:
            r = await self._get(url, headers)
        except httpx.HTTPError as e:
            return Page(url, skip=f"fetch failed: {type(e).__name__}: {e}")
        if r.status_code == 304 and old is not None:
            self.new_state[url] = old
            return Page(url, unchanged=True)
        if r.status_code != 200:
            return Page(url, skip=f"HTTP {r.status_code}")
        if not same_site(str(r.url), self.prefix):
            return Page(url, skip=f"redirected off the site to {r.url}")
        body = r.content
        if len(body) > self.max_bytes:
            return Page(url, skip=f"larger than the size limit of {self.max_bytes} bytes ({len(body)} bytes)")
        sha = hashlib.sha256(body).hexdigest()
        kind = r.headers.get("content-type", "").split(";")[0].strip().lower()
        links: list[str] = []
        if kind in HTML_TYPES:
            html = r.text
            links = page_links(html, str(r.url))
        self.new_state[url] = PageState(sha, r.headers.get("etag"), r.headers.get("last-modified"), links)
        if self.known.get(url) == sha:
            return Page(url, unchanged=True)
        if kind in HTML_TYPES:
            text = html_to_text(html)
            if not text.strip():
                return Page(url, skip="empty page")
            return Page(url, SourceFile(url, text, sha, len(body), "html"))
        if kind in PDF_TYPES:
            try:
                return Page(url, SourceFile(url, pdf_text(url.rsplit("/", 1)[-1], body), sha, len(body), "pdf"))
            except PdfSkipped as e:
                return Page(url, skip=str(e))
        return Page(url, skip=f"not HTML or PDF (content-type {kind or 'missing'})")


# -- the pipeline over fetched pages ------------------------------------------------------------
class _SiteRun(_Run):
    def __init__(self, url: str, index_dir: Path, config: IndexConfig, embedder: Embedder, *,
                 strict: bool, rebuild: bool, progress: bool, max_pages: int, timeout_s: float,
                 on_progress: Callable[[IngestReport], None] | None,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        super().__init__([], index_dir, config, embedder, strict, rebuild, progress, on_progress)
        self.url, self.max_pages, self.timeout_s, self.transport = url, max_pages, timeout_s, transport
        self.fetcher: SiteFetcher | None = None

    async def go(self) -> IngestReport:
        report = await super().go()
        assert self.fetcher is not None
        state = {u: s for u, s in load_state(self.index_dir).items() if not same_site(u, self.fetcher.prefix)}
        state.update(self.fetcher.new_state)
        await asyncio.to_thread(save_state, self.index_dir, state)
        return report

    async def _discover(self) -> Sequence[object]:
        known = {u: e.sha256 for u, e in self.old.manifest.files.items()} if self.old else {}
        state = {} if self.rebuild else load_state(self.index_dir)
        async with httpx.AsyncClient(follow_redirects=True, timeout=self.timeout_s, transport=self.transport,
                                     headers={"User-Agent": f"{USER_AGENT}/0.1"}) as client:
            self.fetcher = SiteFetcher(self.url, client, state, known, self.max_pages, self.config.max_file_bytes)
            self._set_stage("fetching")
            pages = await self.fetcher.fetch()
        log.info("%s: %d pages, %d requests", self.url, len(pages), self.fetcher.requests)
        return pages

    async def _read_stage(self, inp: asyncio.Queue[object], out: asyncio.Queue[object]) -> None:
        while (item := await inp.get()) is not _DONE:
            assert isinstance(item, Page)
            self.report.files_seen += 1
            if item.skip is not None:
                self._skip(item.url, item.skip)
                continue
            if item.unchanged and self.old is not None and item.url in self.old.manifest.files:
                self.report.files_unchanged += 1
                self._carry(item.url)
                self._file_done()
                continue
            assert item.src is not None
            if self.old is not None and item.url in self.old.manifest.files:
                self.report.files_changed += 1
            else:
                self.report.files_new += 1
            await out.put(item.src)
        await out.put(_DONE)

    def _carry_outside_roots(self) -> None:
        """Pages of this site the run did not list leave; other sites' pages and files stay."""
        if self.old is None or self.fetcher is None:
            return
        for source in self.old.manifest.files:
            if source in self.files or source in self.report.skipped:
                continue
            if same_site(source, self.fetcher.prefix):
                self.report.files_removed += 1
                continue
            self._carry(source)


async def ingest_site(url: str, index_dir: str | Path, config: IndexConfig | None = None, *,
                      embedder: Embedder | None = None, max_pages: int = MAX_PAGES, strict: bool = False,
                      rebuild: bool = False, progress: bool = False, timeout_s: float = 30.0,
                      on_progress: Callable[[IngestReport], None] | None = None,
                      transport: httpx.AsyncBaseTransport | None = None) -> IngestReport:
    """Ingest the pages of a website (a sitemap URL or a start URL) into the snapshot in `index_dir`."""
    if not is_url(url):
        raise ValueError(f"a site must be an http:// or https:// URL, got {url!r}")
    if max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, got {max_pages}")
    config = config or IndexConfig()
    emb = embedder if embedder is not None else await asyncio.to_thread(get_embedder, config.model, config.device,
                                                                        config.embed_backend)
    index_dir = Path(index_dir)
    return await run_locked(index_dir, lambda: _SiteRun(
        url, index_dir, config, emb, strict=strict, rebuild=rebuild, progress=progress, max_pages=max_pages,
        timeout_s=timeout_s, on_progress=on_progress, transport=transport))


def ingest_site_sync(url: str, index_dir: str | Path, config: IndexConfig | None = None,
                     **kwargs: Any) -> IngestReport:
    """`ingest_site` for callers without an event loop."""
    return asyncio.run(ingest_site(url, index_dir, config, **kwargs))

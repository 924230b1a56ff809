"""`GET /widget.js` and `GET /` over real HTTP: public, cacheable, shipped inside the package."""

from __future__ import annotations

from importlib import resources

import httpx

from .conftest import ServerThread


def test_widget_js_is_public_javascript_with_a_cache_header(service: ServerThread) -> None:
    r = httpx.get(f"{service.url}/widget.js")  # no API key: the service requires one for questions
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/javascript; charset=utf-8"
    assert "max-age=300" in r.headers["cache-control"]
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "customElements.define(TAG, NotesragChat)" in r.text
    again = httpx.get(f"{service.url}/widget.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]


def test_demo_page_embeds_the_widget_from_its_own_origin(service: ServerThread) -> None:
    r = httpx.get(f"{service.url}/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/widget.js" defer></script>' in r.text and "<notesrag-chat" in r.text
    assert "/widget.js" not in httpx.get(f"{service.url}/openapi.json").text  # not part of the API


def test_assets_are_package_data() -> None:
    static = resources.files("service") / "static"
    assert (static / "widget.js").is_file() and (static / "demo.html").is_file()

"""Citations as links (service/links.py): public sources, lines, anchors, pages, the URL template."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from index.answer.extractive import Citation
from index.ingestion.chunking import LineIndex
from index.search.retriever import Hit
from index.store.snapshot import Manifest, Snapshot
from index.store.tree import Node, NodeTree
from service.links import PLACEHOLDERS, LinkedHit, Linker, UrlTemplate, hide_paths
from service.settings import Settings, describe, get_settings

ROOT = Path("/srv/portal/docs")
GUIDE = "## Setup\nInstall it.\n\n## Use it\nRun the tool.\nThen read the log.\n"


def snapshot(files: dict[str, tuple[str, tuple[str, ...], str]], roots: list[str]) -> Snapshot:
    """A snapshot holding one node a file: source -> (text, heading path, anchor)."""
    tree = NodeTree()
    for i, (source, (text, heading, anchor)) in enumerate(files.items()):
        start = text.find("\n", 0) + 1 if heading and not source.endswith(".pdf") else 0
        lines = LineIndex(text)
        tree.add([Node(f"n{i}", 0, text[start:], source, heading, start, len(text), None,
                       lines.line_of(start), lines.line_of(len(text) - 1), anchor)])
    manifest = Manifest("m", 3, [128], 0, roots=roots)
    return Snapshot(Path("/var/index/snap-1"), manifest, tree, None, None, None)  # type: ignore[arg-type]


def cite(node: Node, quote: str) -> Citation:
    at = node.text.index(quote)
    return Citation(1, node.id, node.source, node.heading_path, node.start + at, node.start + at + len(quote),
                    quote, 0.9)


@pytest.fixture
def snap() -> Snapshot:
    return snapshot({str(ROOT / "guide" / "setup.md"): (GUIDE, ("Use it",), "use-it"),
                     str(ROOT / "manual.pdf"): ("Page one text.\fPage two text.", ("Page 2",), "page-2"),
                     "https://site.example/docs/p1.html": ("# Intro\nHello there.", ("Intro",), "intro"),
                     "/elsewhere/notes/other.md": ("## Other\nMore text.", ("Other",), "other")},
                    roots=[str(ROOT), "/elsewhere/notes"])


def test_template_fills_every_placeholder(snap: Snapshot) -> None:
    t = "https://docs.example/{path_noext}/?file={name}&p={path}&l={line_start}-{line_end}#{anchor}"
    linker = Linker(ROOT, t)
    node = snap.tree["n0"]
    c = linker.citation(cite(node, "Then read the log."), snap)
    # the quote is on line 6 of the file; the node starts on line 2
    assert GUIDE.splitlines()[5] == "Then read the log."
    assert (c.source, c.line_start, c.line_end, c.anchor, c.page) == ("guide/setup.md", 6, 6, "use-it", None)
    assert c.url == "https://docs.example/guide/setup/?file=setup.md&p=guide/setup.md&l=6-6#use-it"
    two = linker.citation(cite(node, "Run the tool.\nThen read"), snap)
    assert (two.line_start, two.line_end) == (5, 6)
    # the other fields stay as the answerer made them
    assert (c.n, c.node_id, c.quote, c.score, c.heading_path) == (1, "n0", "Then read the log.", 0.9, ("Use it",))


def test_missing_values_drop_the_fragment_or_the_link(snap: Snapshot) -> None:
    pdf = snap.tree["n1"]
    md = snap.tree["n0"]
    frag = Linker(ROOT, "https://docs.example/{path}#page={page}")
    assert frag.citation(cite(pdf, "Page two"), snap).url == "https://docs.example/manual.pdf#page=2"
    assert frag.citation(cite(md, "Install"), snap).url == "https://docs.example/guide/setup.md"  # no page
    base = Linker(ROOT, "https://docs.example/page/{page}/{path}")
    assert base.citation(cite(md, "Install"), snap).url is None
    p = base.citation(cite(pdf, "Page two"), snap)
    # a PDF: its page, no heading anchor, no line numbers (its text is extracted, not the file's lines)
    assert (p.source, p.page, p.anchor, p.line_start, p.url) == ("manual.pdf", 2, None, None,
                                                                 "https://docs.example/page/2/manual.pdf")
    assert Linker(ROOT).citation(cite(md, "Install"), snap).url is None  # no template, no url


def test_web_pages_link_to_themselves_and_other_roots_are_relative(snap: Snapshot) -> None:
    linker = Linker(ROOT, "https://docs.example/{path}")
    web = linker.citation(cite(snap.tree["n2"], "Hello"), snap)
    assert (web.source, web.url, web.line_start) == ("https://site.example/docs/p1.html",
                                                     "https://site.example/docs/p1.html#intro", None)
    other = linker.citation(cite(snap.tree["n3"], "More"), snap)
    assert other.source == "other.md" and other.url == "https://docs.example/other.md"
    # already public: kept as it is (a record stored relative must not lose its folders)
    assert linker.source("guide/setup.md", snap) == "guide/setup.md"


def test_hits_carry_the_node_lines_and_encoded_paths() -> None:
    text = "# Ünïcode heading\nline two\nline three\n"
    source = str(ROOT / "a dir" / "ü.md")
    snap = snapshot({source: (text, ("Ünïcode heading",), "ünïcode-heading")}, roots=[str(ROOT)])
    node = snap.tree["n0"]
    h = Linker(ROOT, "https://d.example/{path}#{anchor}").hit(
        Hit(node.id, 0, 0.5, node.text, source, node.heading_path, node.start, node.end), snap)
    assert isinstance(h, LinkedHit)
    assert (h.source, h.line_start, h.line_end, h.text) == ("a dir/ü.md", 2, 3, node.text)
    assert h.url == "https://d.example/a%20dir/%C3%BC.md#%C3%BCn%C3%AFcode-heading"


@pytest.mark.parametrize(("template", "message"), [
    ("https://d.example/{file}", r"names \{file\}, which is not one of \{path\}"),
    ("https://d.example/{path:>9}", r"names \{path:>9\}"),
    ("https://d.example/{path!r}", r"names \{path!r\}"),
    ("https://d.example/{}", r"names \{\}"),
    ("https://d.example/{path", "not valid"),
    ("https://d.example/path}", "not valid"),
    ("javascript:alert(1)//{path}", "must start with http:// or https://"),
    ("/docs/{path}", "must start with http:// or https://"),
])
def test_bad_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UrlTemplate(template)


def test_every_placeholder_is_accepted_and_braces_can_be_literal() -> None:
    t = UrlTemplate("https://d.example/{{x}}/" + "/".join(f"{{{p}}}" for p in PLACEHOLDERS))
    assert t.fields == set(PLACEHOLDERS)
    assert UrlTemplate("https://d.example/{{x}}/{path}").render({"path": "a.md"}) == "https://d.example/{x}/a.md"


def test_a_bad_template_stops_the_start_with_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(_env_file=None, source_url_template="https://d.example/{file}")  # type: ignore[call-arg]
    assert describe(e.value).startswith("error: invalid setting NOTESRAG_SOURCE_URL_TEMPLATE: the source URL "
                                        "template names {file}, which is not one of {path}, {path_noext}")
    assert Settings(_env_file=None, source_url_template=" ").source_url_template is None  # type: ignore[call-arg]
    from service import cli

    monkeypatch.setenv("NOTESRAG_SOURCE_URL_TEMPLATE", "https://d.example/{path")
    monkeypatch.setattr(sys, "argv", ["notesrag", "serve"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:
        get_settings.cache_clear()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid setting NOTESRAG_SOURCE_URL_TEMPLATE: the source URL template is "
                          "not valid") and "Traceback" not in err


def test_hide_paths_keeps_urls_and_words() -> None:
    assert hide_paths("no index in /tmp/pytest-1/index yet") == "no index in …/index yet"
    assert hide_paths("snapshot /var/lib/x/snap-2 was built with 'model'") == "snapshot …/snap-2 was built with 'model'"
    kept = "see https://docs.example/a/b and http://milvus:19530/x, a/b/c, and ~/x/y"
    assert hide_paths(kept) == kept


def test_the_engine_links_answers_and_names_a_reranker_folder_without_its_place(snap: Snapshot,
                                                                               tmp_path: Path) -> None:
    from service.answerers import AnswerResult, ExtractiveAnswerer
    from service.engine import QAEngine, Served

    engine = QAEngine(tmp_path, lambda: None, {"extractive": ExtractiveAnswerer()},  # type: ignore[arg-type,return-value]
                      linker=Linker(ROOT, "https://docs.example/{path}#{anchor}"))
    node = snap.tree["n0"]
    answer = AnswerResult("Install it. [1]", True, [cite(node, "Install it.")], 0.9, "extractive",
                          reranker="/opt/models/my-cross-encoder")
    out = engine._linked(answer, Served(snap, None))  # type: ignore[arg-type]
    assert out.reranker == "…/my-cross-encoder" and answer.reranker == "/opt/models/my-cross-encoder"
    assert out.citations[0].source == "guide/setup.md" and answer.citations[0].source.startswith("/srv/")
    assert out.citations[0].url == "https://docs.example/guide/setup.md#use-it"

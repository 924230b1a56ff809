"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from index.answer.extractive import Citation
from index.search.retriever import Hit
from service.engine import QAResult
from service.links import LinkedHit

Mode = Literal["dense", "bm25", "hybrid"]
AnswererName = Literal["extractive", "llm"]


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return text


# A string that is sent back in the response: JSON can carry a lone surrogate ("\ud800"), which
# could not be encoded again (a 500)
EchoedText = Annotated[str, AfterValidator(_unicode)]


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="the question (the limit is NOTESRAG_MAX_QUESTION_CHARS)")
    # strict: JSON true is not 1, nor "5" five
    top_k: int | None = Field(None, ge=1, strict=True,
                              description="passages to retrieve [default: NOTESRAG_DEFAULT_TOP_K]")
    mode: Mode = "hybrid"
    stream: bool = Field(False, description="send Server-Sent Events: contexts, answer deltas, done")
    answerer: AnswererName | None = Field(None, description="extractive or llm [default: llm when configured]")


# Answers, quotes and passages are note text, never HTML: what an HTML note escaped comes back
# decoded (`&lt;script&gt;` as `<script>`), and a client must render it as text (the widget does).
NOTE_TEXT = ("plain text from the notes, not HTML: it may hold markup characters (an HTML note's "
             "`&lt;script&gt;` arrives as `<script>`); render it as text, never as HTML")


SOURCE = ("the file's path relative to its corpus root (never an absolute path of the server), "
          "or a web page's URL")
LINE = ("1-based line in the source file; null where the indexed text is extracted from the file "
        "(HTML, PDF, web pages) or the snapshot predates line numbers")
ANCHOR = ("the slug of the heading, as GitHub and MkDocs give it (a heading met again gets -1, -2, ...); "
          "null before the first heading and in PDFs")
URL = ("a link to the passage: a web page's URL (with #anchor, or #page=N for a PDF), else "
       "NOTESRAG_SOURCE_URL_TEMPLATE filled in; null without a template")


class CitationOut(BaseModel):
    n: int
    node_id: str
    source: str = Field(description=SOURCE)
    heading_path: list[str]
    start: int = Field(description="character offset of the quote in the source's indexed text")
    end: int
    quote: str = Field(description=NOTE_TEXT)
    score: float
    line_start: int | None = Field(None, description="first line of the quote: " + LINE)
    line_end: int | None = Field(None, description="last line of the quote")
    anchor: str | None = Field(None, description=ANCHOR)
    page: int | None = Field(None, description="a PDF's 1-based page, else null")
    url: str | None = Field(None, description=URL)

    @classmethod
    def of(cls, c: Citation) -> CitationOut:
        return cls(n=c.n, node_id=c.node_id, source=c.source, heading_path=list(c.heading_path),
                   start=c.start, end=c.end, quote=c.quote, score=c.score, line_start=c.line_start,
                   line_end=c.line_end, anchor=c.anchor, page=c.page, url=c.url)


class ContextOut(BaseModel):
    rank: int
    node_id: str
    level: int
    score: float
    source: str = Field(description=SOURCE)
    heading_path: list[str]
    start: int
    end: int
    text: str = Field(description=NOTE_TEXT)
    line_start: int | None = Field(None, description="first line of the passage: " + LINE)
    line_end: int | None = Field(None, description="last line of the passage")
    anchor: str | None = Field(None, description=ANCHOR)
    page: int | None = Field(None, description="a PDF's 1-based page, else null")
    url: str | None = Field(None, description=URL)

    @classmethod
    def of(cls, rank: int, h: Hit) -> ContextOut:
        # the engine returns LinkedHits; a bare Hit has no link
        link = h if isinstance(h, LinkedHit) else LinkedHit(h.node_id, h.level, h.score, h.text, h.source,
                                                            h.heading_path, h.start, h.end)
        return cls(rank=rank, node_id=h.node_id, level=h.level, score=h.score, source=h.source,
                   heading_path=list(h.heading_path), start=h.start, end=h.end, text=h.text,
                   line_start=link.line_start, line_end=link.line_end, anchor=link.anchor, page=link.page,
                   url=link.url)


class AskResponse(BaseModel):
    answer: str = Field(description=NOTE_TEXT)
    answerable: bool = Field(description="false: the notes are taken not to cover the question")
    confidence: float = Field(description="the calibrated probability that the notes answer the question")
    low_confidence: bool = Field(
        False, description="answered, but with a confidence under the low-confidence threshold: check the citations")
    citations: list[CitationOut]
    contexts: list[ContextOut]
    timings: dict[str, float]
    snapshot: str
    answerer: str
    cached: bool = False
    warnings: list[str] = Field(default_factory=list)
    answer_id: str = Field("", description="rate this answer with POST /v1/feedback")
    citation_support: float | None = Field(
        None, description="LLM answers: share of the answer's sentences whose cited passage supports them")
    reranker: str | None = Field(None, description="the cross-encoder that scored the answer, if one did")

    @classmethod
    def of(cls, r: QAResult, answer_id: str = "") -> AskResponse:
        a = r.answer
        return cls(answer_id=answer_id, answer=a.text, answerable=a.answerable, confidence=round(a.confidence, 4),
                   low_confidence=a.low_confidence,
                   citations=[CitationOut.of(c) for c in a.citations],
                   contexts=[ContextOut.of(i, h) for i, h in enumerate(r.hits, 1)],
                   timings=r.timings.as_dict(), snapshot=r.snapshot, answerer=a.answerer, cached=r.cached,
                   warnings=list(a.warnings), citation_support=a.citation_support, reranker=a.reranker)


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    snapshot: str
    hits: list[ContextOut]
    timings: dict[str, float]


# -- OpenAI-compatible chat ----------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat-completions request; sampling fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: EchoedText = "notesrag"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, strict=True, description="only one choice is supported")
    # extensions
    top_k: int | None = Field(None, ge=1, strict=True)
    mode: Mode = "hybrid"
    answerer: AnswererName | None = None


# -- ingestion --------------------------------------------------------------------------------
class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(default_factory=list, max_length=1000,
                             description="files or folders inside the corpus root (relative to it or "
                                         "absolute) [default: the whole corpus root]")
    rebuild: bool = False
    strict: bool = False


class IngestJobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    paths: list[str]
    rebuild: bool
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict, description="every file skipped, or ingested with "
                                   "parts left out, with the reason")
    error: str | None = None
    cancel_requested: bool = Field(False, description="DELETE was sent; a running job stops at its next batch")
    snapshot: str | None = None



# -- feedback ---------------------------------------------------------------------------------
class SourcePick(BaseModel):
    """The passage the user says was the right source: one of the answer's citations, or a passage
    of the served snapshot (a search hit or a context) by node id."""

    model_config = ConfigDict(extra="forbid")

    citation: int | None = Field(None, ge=1, description="the citation's number n")
    node_id: EchoedText | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one(self) -> SourcePick:
        if (self.citation is None) == (self.node_id is None):
            raise ValueError("give exactly one of citation and node_id")
        return self


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: EchoedText = Field(min_length=1, max_length=128, description="the answer_id of an answer")
    rating: Literal["up", "down"]
    comment: EchoedText | None = Field(None, description="free text (the limit is NOTESRAG_FEEDBACK_MAX_COMMENT_CHARS)")
    source: SourcePick | None = None


class PickedSource(BaseModel):
    kind: Literal["citation", "passage"]
    node_id: str
    source: str
    heading_path: list[str]
    quote: str = Field(description="the evidence an exported question takes from this source")


class FeedbackResponse(BaseModel):
    answer_id: str
    rating: Literal["up", "down"]
    replaced: bool = Field(description="an earlier rating of this answer was replaced")
    source: PickedSource | None
    rated_at: float

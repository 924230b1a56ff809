"""Extractive answers: the answer units of the retrieved sections that best answer the question, cited.

The sections of the top hits are cut into answer units that follow the notes'
structure (`index.answer.units`: a line, a bullet, a list with its lead-in, a
diagram, a code block). A cheap score picks a few of them: the best cosine of
their sentences to the question (sentence vectors are computed at ingestion, see
`index.store.sentences`), the question words they share and the rank of their hit.
A cross-encoder, when there is one, scores those few and the best wins; a list
question gets the whole list of the winning item, a question for one thing an item
or its list's lead-in (or both), and a comparison of two defined terms both
definitions. The confidence is the
cross-encoder's probability (the cosine without one); under `threshold` the notes
are taken not to cover the question.

What does not depend on the question (a section's units, their terms, where its stored
sentences are) is computed once per snapshot and stretch of retrieved leaves, and kept in an
LRU that goes with its snapshot (`section_cache`).
"""

from __future__ import annotations

import functools
import math
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from index.answer.units import (
    Unit,
    asks_for_quantity,
    asks_for_sequence,
    asks_for_several,
    enumerates,
    named_term,
    names_term,
    parts,
    states_count,
    units_of,
    unknown_names,
    vocabulary,
)
from index.models.reranker import Reranker, sigmoid
from index.search.retriever import Hit
from index.store.lexical import tokenize
from index.store.snapshot import Snapshot
from index.store.tree import NodeTree, vector_id

# Calibrated on data/questions.jsonl with `notesrag eval`; see eval/README.md. The
# first is a cosine (no cross-encoder, the abstain threshold that maximises no-answer F1); the
# second the cross-encoder's confidence, under that of every answerable question on either
# half of the set (0.17 and 0.25): abstaining is kept for what is clearly not covered.
DEFAULT_THRESHOLD = 0.34
DEFAULT_RERANK_THRESHOLD = 0.15
# The confidence with a cross-encoder: sigmoid(CONFIDENCE_SCALE * (logit + COSINE_WEIGHT *
# (cosine - COSINE_CENTER))), see _confidence: a logistic fit of "the notes answer it" on
# data/questions.jsonl, the same (scale 0.24 / 0.27, centre 3.58 / 3.76) fitted on either half
# of it by id hash (eval/README.md, answers). COSINE_WEIGHT is the weight that separated answerable from
# unanswerable questions best on both halves.
COSINE_WEIGHT = 20.0
COSINE_CENTER = 0.18
CONFIDENCE_SCALE = 0.25
# An answer under this confidence is given with `low_confidence` set rather than withheld: a
# false "not covered" costs a user more than a flagged answer. Only with a cross-encoder.
DEFAULT_LOW_CONFIDENCE = 0.5
# Taken off the confidence's log-odds when a question asks for a quantity ("How many...",
# "What batch size...") and the answer neither states a number of what is counted
# (`units.states_count`: a number next to a word naming it) nor enumerates it (`units.enumerates`:
# a list whose lead-in, heading or items name it, or a list of ways or steps, a diagram of stages).
# On data/questions.jsonl no answerable question's answer is either; the penalty that takes every
# such unanswerable question under DEFAULT_RERANK_THRESHOLD is 4.7 on one half (by id hash, eval/README.md)
# and 4.2 on the other. 5.0 (2.0 and numbers alone before) moved abstention recall from 0.35 to
# 0.59 (halves 0.40 / 0.29 -> 0.60 / 0.57) at precision 1.0, with no answerable question abstaining.
QUANTITY_PENALTY = 5.0
# Taken off as well when the question names something no node of the index mentions.
UNKNOWN_NAME_PENALTY = 2.0

# Units the cross-encoder scores for one question: its cost grows with each (~15 ms a unit
# on one busy CPU thread), and the cheap score's top few hold the answer.
DEFAULT_UNITS_SCORED = 4
# Words of a unit's context (heading, lead, unit) the cross-encoder reads.
MAX_CONTEXT_WORDS = 48
MIN_LEAD_WORDS = 4
# With PARTS, the parts of a unit (its sentences, a diagram's lines: `units.parts`) are scored
# in place of it, and answer alone unless the question asks for stages (a diagram answers
# whole) or the unit has at most WHOLE_WORDS words. Off: measured on data/questions.jsonl
# (eval/README.md, answers), parts raise answer F1 (0.400 -> 0.440) but lower answer_accuracy
# (0.911 -> 0.856): the cross-encoder often picks the sentence next to the evidence.
PARTS = False
WHOLE_WORDS = 0
# A second unit joins the answer when its score is within this of the best (a logit, or the
# cheap score without a cross-encoder).
RERANK_MARGIN = 1.0
# Added to the logit of a diagram or a code block when the question asks for stages or a structure.
SEQUENCE_BONUS = 3.0
# Added to the logit of a definition whose term the question names (`units.names_term`), to choose
# the answer only (the confidence reads the logit without it): the cross-encoder often prefers an
# on-topic neighbour ("FID (Fréchet Inception Distance): ..." for "How does the Inception Score
# judge generated images?"). On data/questions.jsonl answer_accuracy 0.917 -> 0.928 (halves 0.944 /
# 0.889 -> 0.944 / 0.911), F1 0.420 -> 0.425 at 3.0. In its logits the evidence's definition trails by
# 1.4 and 2.5 in the two gained, by 3.8 in three more. Since a list's lead-in and item may answer
# alone (_lead_or_item), the right answer once lost past 3.9 is lost only past 4.9, and 4.0 gains
# those three (0.933 -> 0.950, all on one half); 40 questions on definitions written apart from the
# set (bench/probes/terms.jsonl) and the quantity probes answer the same at 3.0 and 4.0.
TERM_BONUS = 4.0
CHEAP_MARGIN = 0.08
# A list's lead-in line and its best item answer together unless one of them, scored alone by the
# cross-encoder, beats the other by LEAD_SPLIT_MARGIN (a logit); the lead-in alone must also score
# within LEAD_ALONE_SLACK of the two together (`_lead_or_item`). On the 31 questions of
# data/questions.jsonl answered by a lead-in and an item, answer F1 0.302 -> 0.426 with none lost;
# margins 3-4 and slacks 1-2 give the same answers, margin 2 loses two (eval/README.md, answers).
LEAD_SPLIT_MARGIN = 3.0
LEAD_ALONE_SLACK = 1.5
NOT_FOUND = "The notes do not cover this question."
# Sentence score = cosine + OVERLAP_WEIGHT * share of question terms it holds
#                  + RANK_WEIGHT / (1 + rank of the hit it came from); tuned on data/questions.jsonl.
OVERLAP_WEIGHT = 0.7
RANK_WEIGHT = 0.05

_MARKER = re.compile(r"\s*\[\d+\]")


@dataclass(frozen=True, slots=True)
class Citation:
    n: int
    node_id: str
    source: str
    heading_path: tuple[str, ...]
    start: int
    end: int
    quote: str
    score: float
    # where the quote is, for a link to it (the service fills these in: service.links)
    line_start: int | None = None  # 1-based lines of the quote in the source file
    line_end: int | None = None
    anchor: str | None = None  # the slug of its heading, as GitHub and MkDocs give it
    page: int | None = None  # a PDF's 1-based page
    url: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "node_id": self.node_id, "source": self.source,
                "heading_path": list(self.heading_path), "start": self.start, "end": self.end,
                "quote": self.quote, "score": self.score, "line_start": self.line_start,
                "line_end": self.line_end, "anchor": self.anchor, "page": self.page, "url": self.url}


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    answerable: bool
    citations: list[Citation]
    confidence: float
    reranker: str | None = None  # the cross-encoder that scored the units, if any
    low_confidence: bool = False  # answered, but under the low-confidence threshold

    @property
    def plain(self) -> str:
        """The answer without its [n] markers (what answer F1 is computed on)."""
        return _MARKER.sub("", self.text).strip()


@dataclass(frozen=True, slots=True)
class _Candidate:
    unit: Unit
    source: str
    heading: tuple[str, ...]
    section: int  # which section (in hit order) it came from
    index: int  # its place among the section's units
    cosine: float
    cheap: float
    score: float = 0.0
    sub: int = -1  # its place among the parts of unit `index` (`index.answer.units.parts`); -1: the unit
    whole: Unit | None = None  # the unit a part is cut from
    bonus: float = 0.0  # what `score` holds beyond the cross-encoder's logit that the confidence omits


@dataclass(frozen=True, slots=True)
class _Scored:
    """A unit and what its cheap score needs besides the question: the terms of its context and
    the sentences of its section inside it (indices into `_Section.rows`; those it overlaps
    when none is inside, for a part shorter than they are)."""

    unit: Unit
    terms: frozenset[str]
    sentences: np.ndarray


@dataclass(frozen=True, slots=True)
class _Section:
    """What one stretch of a section's leaves gives every question: its answer units (with their
    parts) and the sentence rows of the store inside it. `rows[k]` is the row of the k-th
    distinct sentence span, taken from the first leaf (in start order) that holds it; `alts`
    lists, for a span that several leaves hold, those (leaf, row)s, so a request takes the row
    of the leaf it retrieved first, as the answer did before the cache."""

    source: str
    heading: tuple[str, ...]
    units: tuple[_Scored, ...]
    parts: tuple[tuple[_Scored, ...], ...]  # `index.answer.units.parts` of each unit
    listable: tuple[bool, ...]  # a list that answers even a question for one thing
    rows: np.ndarray
    alts: tuple[tuple[int, tuple[tuple[str, int], ...]], ...]


def _stretches(hits: list[Hit], tree: NodeTree, max_hits: int
               ) -> tuple[list[tuple[tuple[str, ...], int]], dict[str, int]]:
    """The stretches of leaves under the top hits, one per run of overlapping leaves of a section
    (source, heading path), each with the rank of its section's first hit; and each leaf's
    place in hit order."""
    groups: dict[tuple[str, tuple[str, ...]], tuple[dict[str, None], int]] = {}
    order: dict[str, int] = {}
    for rank, hit in enumerate(hits[:max_hits]):
        if hit.node_id not in tree:
            continue
        for leaf in tree.leaves_under(hit.node_id):
            node = tree[leaf]
            order.setdefault(leaf, len(order))
            groups.setdefault((node.source, node.heading_path), ({}, rank))[0][leaf] = None
    out: list[tuple[tuple[str, ...], int]] = []
    for leaves, rank in groups.values():
        nodes = sorted((tree[n] for n in leaves), key=lambda n: n.start)
        run, end = [nodes[0].id], nodes[0].start + len(nodes[0].text)
        for n in nodes[1:]:
            if n.start > end:  # a gap: the next stretch stands alone
                out.append((tuple(run), rank))
                run, end = [], n.start
            run.append(n.id)
            end = max(end, n.start + len(n.text))
        out.append((tuple(run), rank))
    return out, order


def _section(snapshot: Snapshot, leaves: tuple[str, ...]) -> _Section:
    """The question-independent work on one stretch of leaves (in start order): its text stitched
    from them (overlapping leaves joined), its units, their terms and sentences."""
    tree, store = snapshot.tree, snapshot.sentences
    nodes = [tree[n] for n in leaves]
    start, text = nodes[0].start, nodes[0].text
    for n in nodes[1:]:
        text += n.text[start + len(text) - n.start:]
    source, heading = nodes[0].source, nodes[0].heading_path
    title = heading[-1] if heading else ""
    held: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for leaf in leaves:
        lo, hi = store.rows(vector_id(leaf))
        for r in range(lo, hi):
            held.setdefault((int(store.start[r]), int(store.end[r])), []).append((leaf, r))
    spans = list(held)
    a = np.array([x for x, _ in spans], dtype=np.int64)
    b = np.array([y for _, y in spans], dtype=np.int64)

    def scored(u: Unit) -> _Scored:
        inside = np.flatnonzero((u.start <= a) & (b <= u.end))
        if not len(inside):
            inside = np.flatnonzero((a < u.end) & (u.start < b))
        return _Scored(u, frozenset(tokenize(u.context(title))), inside)

    units = units_of(text, start, title)
    return _Section(
        source, heading, tuple(scored(u) for u in units), tuple(tuple(scored(p) for p in parts(u)) for u in units),
        tuple(u.kind == "list" and (u.whole or u.lead.endswith("?") or _sentence_lead(u)) for u in units),
        np.array([held[k][0][1] for k in spans], dtype=np.int64),
        tuple((k, tuple(held[span])) for k, span in enumerate(spans) if len(held[span]) > 1))


# Sections (stretches of retrieved leaves) whose units a snapshot keeps, least recently used
# dropped first: a few KB each.
SECTION_CACHE_SIZE = 1024


class _SnapshotWork:
    """What answers compute once a snapshot: its vocabulary, and its sections' units (LRU). It
    holds the snapshot weakly, so it goes with it (a hot swap leaves no stale units)."""

    def __init__(self, snapshot: Snapshot, maxsize: int) -> None:
        ref = weakref.ref(snapshot)

        def section(leaves: tuple[str, ...]) -> _Section:
            snap = ref()
            assert snap is not None  # called only by a request holding it
            return _section(snap, leaves)

        def whole(parent: str, source: str, heading: tuple[str, ...]) -> tuple[Unit, ...]:
            snap = ref()
            assert snap is not None
            return _parent_units(snap.tree, parent, source, heading)

        self.section = functools.lru_cache(maxsize=maxsize)(section)
        self.whole = functools.lru_cache(maxsize=maxsize)(whole)
        self._vocabulary: frozenset[str] | None = None

    def vocabulary(self, snapshot: Snapshot) -> frozenset[str]:
        if self._vocabulary is None:
            self._vocabulary = vocabulary(
                t for n in snapshot.tree.by_id.values() for t in (n.text, *n.heading_path))
        return self._vocabulary


_WORK: dict[int, tuple[weakref.ref[Snapshot], _SnapshotWork]] = {}
_WORK_LOCK = threading.Lock()


def _work(snapshot: Snapshot) -> _SnapshotWork:
    held = _WORK.get(id(snapshot))
    if held is not None and held[0]() is snapshot:
        return held[1]
    return section_cache(snapshot, SECTION_CACHE_SIZE, replace=False)


def section_cache(snapshot: Snapshot, maxsize: int = SECTION_CACHE_SIZE, *, replace: bool = True) -> _SnapshotWork:
    """The per-snapshot cache of answer units, made anew holding at most `maxsize` sections
    (0: none, each request splits its sections again), or, with `replace` off, the one there is."""
    if maxsize < 0:
        raise ValueError(f"section cache size must be >= 0, got {maxsize}")
    key = id(snapshot)
    with _WORK_LOCK:
        held = _WORK.get(key)
        if not replace and held is not None and held[0]() is snapshot:
            return held[1]
        work = _SnapshotWork(snapshot, maxsize)
        # the entry goes when the snapshot does (before its id can be reused)
        _WORK[key] = (weakref.ref(snapshot, lambda _: _WORK.pop(key, None)), work)
        return work


def section_cache_info(snapshot: Snapshot) -> functools._CacheInfo | None:
    """Hits, misses and size of `snapshot`'s section cache; None when it has none."""
    held = _WORK.get(id(snapshot))
    return held[1].section.cache_info() if held is not None and held[0]() is snapshot else None


def _vocabulary(snapshot: Snapshot) -> frozenset[str]:
    """The words of every node of `snapshot` and their headings, built once a snapshot."""
    return _work(snapshot).vocabulary(snapshot)


def _cheap(s: _Scored, cos: np.ndarray, q_terms: set[str], rank: int) -> tuple[float, float]:
    """(best sentence cosine, cheap score) of a unit: the best cosine of its sentences, its share
    of the question's terms and the rank of its hit."""
    best_cos = float(cos[s.sentences].max()) if len(s.sentences) else 0.0
    overlap = len(q_terms & s.terms) / len(q_terms) if q_terms else 0.0
    return best_cos, best_cos + OVERLAP_WEIGHT * overlap + RANK_WEIGHT / (1 + rank)


def _candidates(question: str, qvec: np.ndarray, hits: list[Hit], snapshot: Snapshot,
                max_hits: int) -> list[_Candidate]:
    """Every answer unit of the top hits' sections, with its cheap score, best first."""
    store = snapshot.sentences
    work = _work(snapshot)
    q = qvec.astype(np.float32).reshape(-1)
    q_terms = set(tokenize(question))
    several = asks_for_several(question)
    stretches, order = _stretches(hits, snapshot.tree, max_hits)
    out: list[_Candidate] = []
    for s, (leaves, rank) in enumerate(stretches):
        sec = work.section(leaves)
        if not sec.units:
            continue
        rows = sec.rows
        if sec.alts:  # a span several leaves hold: the row of the one retrieved first
            rows = rows.copy()
            for k, held in sec.alts:
                rows[k] = min(held, key=lambda lr: order[lr[0]])[1]
        cos = store.vectors[rows].astype(np.float32) @ q if len(rows) else np.zeros(0, np.float32)
        for i, (sc, listable) in enumerate(zip(sec.units, sec.listable, strict=True)):
            u = sc.unit
            if u.kind == "list" and not (several or listable):
                continue
            out.append(_Candidate(u, sec.source, sec.heading, s, i, *_cheap(sc, cos, q_terms, rank)))
            for j, p in enumerate(sec.parts[i] if PARTS else ()):
                out.append(_Candidate(p.unit, sec.source, sec.heading, s, i, *_cheap(p, cos, q_terms, rank),
                                      sub=j, whole=u))
    out.sort(key=lambda c: -c.cheap)
    return out


def _pair_text(c: _Candidate, *, lead: bool = True) -> str:
    """What the cross-encoder reads of a candidate: its section's last heading, its lead (unless
    `lead` is off) and the unit, cut to MAX_CONTEXT_WORDS (the start of a long unit decides its
    score; its tail costs time)."""
    heading = c.heading[-1] if c.heading else ""
    text = c.unit.context(heading) if lead else f"{heading} {c.unit.text}"
    return " ".join(text.split()[:MAX_CONTEXT_WORDS])


def _rescore(question: str, cands: list[_Candidate], reranker: Reranker | None,
             units_scored: int) -> list[_Candidate]:
    """The candidates the answer is chosen from, best first, `score` set: the cross-encoder's
    logit for the cheap score's top `units_scored` (lists through their items), or the cheap
    score itself without a cross-encoder."""
    if reranker is None:
        return [_with_score(c, c.cheap) for c in cands]
    cut = {(c.section, c.index) for c in cands if c.whole is not None}
    # a unit cut into parts is scored through them; a list through its items
    top = [c for c in cands if (c.unit.kind != "list" or c.unit.whole)
           and (c.whole is not None or (c.section, c.index) not in cut)][:units_scored]
    if not top:
        return []
    contexts = [_pair_text(c) for c in top]
    # one call: the cross-encoder sorts the pairs by length itself and, packaged, runs each alone
    # (`index.models.reranker.OnnxCrossEncoder.score_pairs`), so no pair is padded to another
    logits = reranker.score(question, contexts)
    # a question about stages or a structure is answered by a diagram (or code) rather than by
    # a line near it: the cross-encoder reads arrow lines poorly
    bonus = SEQUENCE_BONUS if asks_for_sequence(question) else 0.0
    scored = []
    for c, s in zip(top, logits, strict=True):
        term = TERM_BONUS if names_term(question, c.unit.text) else 0.0
        scored.append(_with_score(c, float(s) + (bonus if c.unit.kind in ("diagram", "code") else 0.0) + term, term))
    scored.sort(key=lambda c: -c.score)
    return scored


def _confidence(logit: float, cosine: float, penalty: float = 0.0) -> float:
    """The probability that the notes answer the question: the cross-encoder's logit for the best
    unit, moved by the best sentence cosine of the retrieved sections, less `penalty` (in the
    sigmoid's argument). The cross-encoder alone is sure of passages that are on the topic but
    do not answer ("How many parameters does ResNet-50 have?"); the cosine alone misses answers
    worded unlike the question."""
    return float(sigmoid(CONFIDENCE_SCALE * (logit + COSINE_WEIGHT * (cosine - COSINE_CENTER)) - penalty))


def _sentence_lead(u: Unit) -> bool:
    """A short list led in by a sentence ("Swin Transformer introduces Transformers to CV:"):
    its items answer only with it."""
    return u.kind == "list" and u.items <= 3 and len(u.lead_line.split()) >= MIN_LEAD_WORDS


def _with_score(c: _Candidate, score: float, bonus: float = 0.0) -> _Candidate:
    return _Candidate(c.unit, c.source, c.heading, c.section, c.index, c.cosine, c.cheap, score,
                      c.sub, c.whole, bonus)


def _whole(c: _Candidate, score: float) -> _Candidate:
    """The unit a part was cut from, in place of the part."""
    assert c.whole is not None
    return _Candidate(c.whole, c.source, c.heading, c.section, c.index, c.cosine, c.cheap, score)


def _list_of(item: _Candidate, cands: list[_Candidate]) -> _Candidate | None:
    """The list candidate that holds `item`, if there is one."""
    for c in cands:
        u = c.unit
        if (u.kind == "list" and c.section == item.section
                and u.start <= item.unit.start and item.unit.end <= u.end):
            return c
    return None


def _lead_of(lst: _Candidate, score: float) -> _Candidate | None:
    """The lead-in line of a list, as a candidate of its own scored `score`; None when the list
    has none."""
    u, line = lst.unit, lst.unit.lead_line
    if not line or not u.quote.startswith(line):
        return None
    return _Candidate(Unit("prose", u.start, u.start + len(line), line, u.lead), lst.source, lst.heading,
                      lst.section, lst.index, lst.cosine, lst.cheap, score)


def _lead_or_item(question: str, lead: _Candidate, item: _Candidate,
                  reranker: Reranker | None) -> list[_Candidate]:
    """A list's lead-in line and its best item, or the one of them that answers alone.

    The cross-encoder scored the item with the lead-in before it; it scores each alone too (two
    pairs more). The item answers alone when it outscores the lead-in by LEAD_SPLIT_MARGIN ("What
    makes LightGBM efficient?": "LightGBM uses histogram-based algorithms ..." under "GBDT: builds
    decision trees in sequence ..."); the lead-in answers alone when it outscores the item by as
    much and scores within LEAD_ALONE_SLACK of the two together, the item adding nothing ("How
    does gradient boosting build its trees?"). Otherwise both, as without a cross-encoder; an item
    that needs its lead-in ("XGBoost is a common implementation.") scores low alone."""
    if reranker is None:
        return [lead, item]
    lead_alone, item_alone = (float(x) for x in reranker.score(
        question, [_pair_text(c, lead=False) for c in (lead, item)]))
    together = item.score - item.bonus
    if item_alone - lead_alone >= LEAD_SPLIT_MARGIN:
        return [item]
    if lead_alone - item_alone >= LEAD_SPLIT_MARGIN and lead_alone >= together - LEAD_ALONE_SLACK:
        return [lead]
    return [lead, item]


def _choose(question: str, ranked: list[_Candidate], cands: list[_Candidate],
            max_units: int, margin: float, reranker: Reranker | None = None,
            widen: Callable[[_Candidate], _Candidate] | None = None) -> list[_Candidate]:
    """The units that answer, in the notes' order; `widen` gives a list the items and lead-in that
    the retrieved leaves cut off (`_whole_list`)."""
    best = ranked[0]
    if best.whole is not None and (
            (best.unit.kind in ("diagram", "code") and asks_for_sequence(question))
            or len(best.whole.text.split()) <= WHOLE_WORDS):
        # stages or a structure: the whole diagram or code block; a short line: whole
        best = _whole(best, best.score)
    if best.unit.kind == "list" and widen is not None:
        best = widen(best)
    if best.unit.kind == "item":
        lst = _list_of(best, cands)
        if lst is not None and widen is not None:
            lst = widen(lst)
        # a list question, or a list of fragments: the best item brings its whole list
        if lst is not None and (lst.unit.whole or asks_for_several(question)):
            return [_with_score(lst, best.score)]
        # a list answering a question line, or a short list led in by a sentence, for a question
        # about one thing: the item, after the lead-in line that the cross-encoder read with it
        # ("GBDT: builds decision trees in sequence ..." before "- XGBoost is ..."). The whole
        # list made the answer long (answer F1 0.404 / 0.402 -> 0.425 / 0.414 on the halves of
        # data/questions.jsonl, answer_accuracy the same); the item alone lost the answers that
        # are in the lead-in (0.944 / 0.889 -> 0.911 / 0.844); with a cross-encoder, the lead-in
        # and the item are scored alone as well, and one of them may answer alone (_lead_or_item).
        if lst is not None:
            lead = _lead_of(lst, best.score)
            return [best] if lead is None else _lead_or_item(question, lead, best, reranker)
    chosen = [best]
    for c in ranked[1:]:
        if len(chosen) >= max_units:
            break
        # a second unit only when nearly as good and next to the first in the same section
        adjacent = (c.index == best.index and abs(c.sub - best.sub) == 1 if best.sub >= 0
                    else c.sub < 0 and abs(c.index - best.index) == 1)
        # (never a part of the first: an item of the list that answers)
        inside = c.unit.start < best.unit.end and best.unit.start < c.unit.end
        if (c.section == best.section and adjacent and c.unit.kind != "list" and not inside
                and c.score >= best.score - margin):
            chosen.append(c)
    chosen.sort(key=lambda c: (c.section, c.unit.start))
    return chosen


def _compared(question: str, chosen: list[_Candidate], ranked: list[_Candidate], cands: list[_Candidate],
              reranker: Reranker | None) -> list[_Candidate]:
    """A question that names two defined terms ("How does layer norm differ from batch norm?",
    "For FID and for SSIM, ...") answered by the definition of one of them: the definition of the
    other (the cheap score's best) joins it, and the two answer without the rest (a lead-in).
    The joined unit keeps its cross-encoder logit, scored now when it was not among those scored."""
    chosen_terms = [named_term(question, c.unit.text) for c in chosen]
    named = {t for t in chosen_terms if t is not None}
    if len(named) != 1:
        return chosen
    # the terms the question names; one inside another it names ("loss" in "Huber loss", "Loss: ..."
    # of another section) is not named
    cand_terms = [named_term(question, c.unit.text) for c in cands]
    terms = {t for t in cand_terms if t is not None}
    inside = {t for t in terms if any(t != o and f" {t} " in f" {o} " for o in terms)}
    taken = [(c.unit.start, c.unit.end) for c in chosen]
    for c, term in zip(cands, cand_terms, strict=True):
        if (c.unit.kind == "list" or c.whole is not None or term is None or term in inside
                or any(f" {term} " in f" {t} " or f" {t} " in f" {term} " for t in named)
                or any(c.unit.start < b and a < c.unit.end for a, b in taken)):
            continue
        scored = next((r for r in ranked if (r.section, r.index, r.sub) == (c.section, c.index, c.sub)), None)
        if scored is None:
            logit = float(reranker.score(question, [_pair_text(c)])[0]) if reranker is not None else c.cheap
            scored = _with_score(c, logit)
        pair = [u for u, t in zip(chosen, chosen_terms, strict=True) if t is not None] + [scored]
        return sorted(pair, key=lambda u: (u.section, u.unit.start))
    return chosen


def _parent_units(tree: NodeTree, parent: str, source: str, heading: tuple[str, ...]) -> tuple[Unit, ...]:
    """The answer units of section (source, heading) over its leaves under node `parent`, split
    from the parent's text (its leaves may leave a line break between them); () when it holds
    fewer than two of them."""
    leaves = [n for n in (tree[x] for x in tree.leaves_under(parent))
              if n.source == source and n.heading_path == heading]
    if len(leaves) < 2:
        return ()
    node = tree[parent]
    a, b = min(n.start for n in leaves), max(n.end for n in leaves)
    return tuple(units_of(node.text[a - node.start:b - node.start], a, heading[-1] if heading else ""))


def _whole_list(c: _Candidate, hits: list[Hit], snapshot: Snapshot) -> _Candidate:
    """A list answer as the notes have it, not the part of it that the retrieved leaves hold: when
    a leaf of the list's section that was not retrieved (under the same parent node) continues
    it, the list of the section's leaves under that parent, lead-in and every item ("What are the
    types of normalization?" retrieved the leaf with Group and Instance Norm, not the one with the
    lead-in, Batch and Layer Norm)."""
    tree = snapshot.tree
    parents: dict[str, None] = {}
    for hit in hits:
        if hit.node_id not in tree:
            continue
        for leaf in tree.leaves_under(hit.node_id):
            n = tree[leaf]
            if n.source == c.source and n.heading_path == c.heading and n.start < c.unit.end and c.unit.start < n.end:
                p = tree.parent(leaf)
                if p is not None:
                    parents[p] = None
    work = _work(snapshot)
    for p in parents:
        for u in work.whole(p, c.source, c.heading):
            if (u.kind == "list" and u.start <= c.unit.start and c.unit.end <= u.end
                    and u.end - u.start > c.unit.end - c.unit.start):
                return _Candidate(u, c.source, c.heading, c.section, c.index, c.cosine, c.cheap, c.score,
                                  c.sub, c.whole, c.bonus)
    return c


def _cited_node(tree: NodeTree, hits: list[Hit], c: _Candidate) -> str | None:
    """The smallest retrieved node (a leaf overlapping the unit, or one of its ancestors) holding the
    unit's span."""
    a, b = c.unit.start, c.unit.end
    for hit in hits:
        if hit.node_id not in tree:
            continue
        for leaf in tree.leaves_under(hit.node_id):
            node = tree[leaf]
            if node.source != c.source or not (node.start < b and a < node.end):
                continue
            nid: str | None = leaf
            while nid is not None:
                n = tree[nid]
                if n.start <= a and b <= n.end:
                    return nid
                nid = tree.parent(nid)
    return None


def _select(question: str, question_vector: np.ndarray, hits: list[Hit], snapshot: Snapshot, *,
            max_sentences: int, max_hits: int, reranker: Reranker | None, units_scored: int,
            margin: float | None) -> tuple[list[_Candidate], list[_Candidate], list[_Candidate]]:
    """Every candidate unit (cheap score first), those the answer is chosen from (`_rescore`), and
    the units that answer ([] when there is none): what `extract_answer` answers with, before its
    confidence and citations."""
    cands = _candidates(question, question_vector, hits, snapshot, max_hits)
    ranked = _rescore(question, cands, reranker, units_scored)
    if not ranked:
        return cands, ranked, []
    if margin is None:
        margin = CHEAP_MARGIN if reranker is None else RERANK_MARGIN
    chosen = _choose(question, ranked, cands, max_sentences, margin, reranker,
                     lambda c: _whole_list(c, hits, snapshot))
    if max_sentences > 1:
        chosen = _compared(question, chosen, ranked, cands, reranker)
    return cands, ranked, chosen


def extract_answer(question: str, question_vector: np.ndarray, hits: list[Hit], snapshot: Snapshot, *,
                   max_sentences: int = 2, threshold: float | None = None, max_hits: int = 3,
                   reranker: Reranker | None = None, units_scored: int = DEFAULT_UNITS_SCORED,
                   margin: float | None = None, low_confidence: float | None = None) -> Answer:
    """The best answer units of `hits` for `question`, with verified citations; or a no-answer.

    `max_sentences` bounds the units an answer joins (one, or two when the second is nearly
    as good (within `margin`) and next to the first). Under `threshold` the answer is a
    no-answer; under `low_confidence` (default DEFAULT_LOW_CONFIDENCE with a cross-encoder,
    none without) it is given with `low_confidence` set."""
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    if units_scored < 1:
        raise ValueError(f"units_scored must be >= 1, got {units_scored}")
    name = reranker.name if reranker is not None else None
    if threshold is None:
        threshold = DEFAULT_THRESHOLD if reranker is None else DEFAULT_RERANK_THRESHOLD
    if low_confidence is None:
        low_confidence = -math.inf if reranker is None else DEFAULT_LOW_CONFIDENCE
    cands, ranked, chosen = _select(question, question_vector, hits, snapshot, max_sentences=max_sentences,
                                    max_hits=max_hits, reranker=reranker, units_scored=units_scored, margin=margin)
    if not ranked:
        return Answer(NOT_FOUND, False, [], 0.0, name)
    if reranker is not None:
        # a question for a quantity that the answer states no number for, or whose counted thing
        # it never names, is likely not covered ("How many attention heads does BERT-base have?"
        # answered by the BERT embeddings line and its 30,000 tokens); a list, a diagram or code
        # answers by what it enumerates ("How many stages does ResNet50 have?": its diagram)
        missing = (asks_for_quantity(question)
                   and not any(enumerates(question, c.unit, c.heading[-1] if c.heading else "") for c in chosen)
                   and not any(states_count(question, " ".join((*c.heading, c.unit.text))) for c in chosen))
        # a question naming what the notes never mention ("CIFAR-10", "PyTorch") likely is not covered
        unknown = bool(unknown_names(question, _vocabulary(snapshot)))
        confidence = _confidence(max(c.score - c.bonus for c in ranked), max(c.cosine for c in cands),
                                 (QUANTITY_PENALTY if missing else 0.0) + (UNKNOWN_NAME_PENALTY if unknown else 0.0))
    else:
        confidence = ranked[0].cosine
    if confidence < threshold:
        return Answer(NOT_FOUND, False, [], confidence, name)
    citations: list[Citation] = []
    shown: list[str] = []
    tree = snapshot.tree
    for c in chosen:
        nid = _cited_node(tree, hits, c)
        if nid is None:
            continue
        node = tree[nid]
        quote = node.text[c.unit.start - node.start:c.unit.end - node.start]
        if not quote or quote != c.unit.quote:  # never cite what the node does not say
            continue
        n = len(citations) + 1
        citations.append(Citation(n, node.id, node.source, node.heading_path, c.unit.start, c.unit.end,
                                  quote, round(c.score if reranker is not None else c.cosine, 4)))
        shown.append(f"{c.unit.text} [{n}]")
    if not citations:
        return Answer(NOT_FOUND, False, [], confidence, name)
    return Answer(" ".join(shown), True, citations, confidence, name, confidence < low_confidence)

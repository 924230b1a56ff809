"""Answer units: the pieces of a section that an answer may quote, following the notes' structure.

A unit is a whole line of prose (cut into sentences only when long, and then a fragment
such as "Lower is better." stays with the sentence before it), a bullet with all its
sentences (a definition bullet keeps its term), a list with its lead-in line and all its
items, a run of arrow lines (`-> Conv1 -> 64*112*112`) with the line that starts it, or a
code block, fenced or not. A question line in the notes is answered by the unit that
follows it. Pure functions over text and offsets: nothing here knows about models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from index.store.lexical import tokenize
from index.store.sentences import split_sentences

# A line of prose longer than this many words is cut into sentences.
MAX_LINE_WORDS = 45
# A sentence of fewer words than this is a fragment: it never stands alone.
MIN_SENTENCE_WORDS = 4

_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(?!>)")
_ARROW = re.compile(r"^\s*(?:->|→|=>)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_CODE = re.compile(r"^\s*(?:def |class |for |while |if |elif |else:|return\b|import |from \S+ import |"
                   r"[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*[-+*/]?=(?!=)\s*\S)")
# Questions that ask for several things: a list answers them with all its items.
_LIST_QUESTION = re.compile(
    r"\b(?:what|which) (?:are|were)\b|\bwhich \w+(?: \w+)? (?:are|were)\b|\blist\b|\bways?\b|"
    r"\bstages?\b|\bsteps?\b|\bcomponents?\b|\bparts\b|\bkinds?\b|\btypes?\b|\bmetrics\b|"
    r"\bmethods\b|\bapproaches\b|\boptions\b|\bstructure\b|\bname (?:the|some|all)\b|"
    r"\bhow (?:can|do|should) (?:i|we|you)\b|\bwhat can i do\b",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Unit:
    """`start`/`end` are offsets in the text given to `units_of` (plus its `offset`);
    `quote` is that span; `lead` is a question or lead-in the unit answers (context only)."""

    kind: str  # prose, item, list, diagram, code, reply (what follows a question line)
    start: int
    end: int
    quote: str
    lead: str = ""
    items: int = 1
    whole: bool = False  # a list whose items are fragments: it answers as a whole
    lead_line: str = ""  # a list's lead-in line, if it has one

    @property
    def text(self) -> str:
        """The quote with its white space folded (what an answer shows)."""
        return " ".join(self.quote.split())

    def context(self, heading: str = "") -> str:
        """What a cross-encoder reads: the section heading, the lead, the unit."""
        return " ".join(p for p in (heading, self.lead, self.text) if p)


_SEQUENCE_QUESTION = re.compile(
    r"\b(?:stages?|steps|structure|architecture|pipeline|flow|shapes|layers|order)\b", re.IGNORECASE)


def asks_for_sequence(question: str) -> bool:
    """Whether a question asks for stages or a structure, as a diagram or code shows them."""
    return bool(_SEQUENCE_QUESTION.search(question))


_QUANTITY_QUESTION = re.compile(
    r"\bhow (?:many|much|long|big|large|deep|wide|fast|often|old)\b|\bby how much\b|\bnumber of\b|"
    r"\bwhat (?!(?:are|were)\b)(?:\w+ ){0,2}(?:size|rate|number|rank|stride|score|value|count|dimension|percentage|"
    r"ratio|epochs?|steps|timesteps|year|depth|width)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                     r"twenty|hundred|thousands?|millions?|billions?|half|single|double)\b", re.IGNORECASE)


def asks_for_quantity(question: str) -> bool:
    """Whether a question asks for a number ("How many...", "What batch size..."); "What are the
    steps..." asks for the steps themselves."""
    return bool(_QUANTITY_QUESTION.search(question))


def states_number(text: str) -> bool:
    """Whether a text states a number, in digits or in words."""
    return bool(_NUMBER.search(text))


# What a quantity question counts ("How many attention heads ..." -> "heads") or measures
# ("What batch size ..." -> "batch"); an answer that never names it states another number.
_HOW_MANY = re.compile(
    r"\b(?:how many|number of) (?:[\w'-]+ ){0,3}?([\w'-]+?)(?= (?:does|do|did|is|are|was|were|should|can|could|"
    r"would|will|has|have|had|in|for|of|to|on|per|at|with|used|that)\b|\?|$)", re.IGNORECASE)
_MEASURED = re.compile(
    r"\bwhat ((?:[\w'-]+ ){0,4})(size|rate|number|rank|stride|score|value|count|dimension|percentage|"
    r"ratio|epochs?|steps|timesteps|year|depth|width)\b", re.IGNORECASE)
# measures that name what they measure ("What stride does ...": a stride; "What embedding dimension":
# a dimension, not the "embedding matrix (30,000 tokens)"), unlike "size" or "value"
_NAMED_MEASURES = frozenset({"rank", "stride", "dimension", "epoch", "epochs", "steps", "timesteps", "depth",
                             "width"})
# words before the measure that do not say what is measured ("What is the default batch size")
_NOT_MEASURED = frozenset({"is", "are", "was", "were", "the", "a", "an", "default", "typical", "usual",
                           "best", "good", "optimal", "recommended"})


def counted(question: str) -> str | None:
    """What a quantity question counts or measures, when it names it: the noun after "how many"
    ("How many attention heads ..." -> "heads"), or the words before the measure ("What batch
    size ..." -> "batch"); None for "How large is ...", "What value is ...". """
    m = _HOW_MANY.search(question)
    if m:
        return m.group(1)
    m = _MEASURED.search(question)
    if m:
        if m.group(2).lower() in _NAMED_MEASURES:  # "What embedding dimension ...": a dimension
            return m.group(2)
        return " ".join(w for w in m.group(1).split() if w.lower() not in _NOT_MEASURED) or None
    return None


def _counted_words(question: str) -> set[str]:
    """The stemmed words of what `question` counts (`counted`); empty when it names nothing."""
    what = counted(question)
    return set(tokenize(what)) if what is not None else set()


# A number states a count of what is counted only this close to a word naming it ("50 layers",
# "30,000 tokens", "8 of them" after "Multi-head"), not a number of something else in the same
# passage ("two linear layers" five words past "Multi-head" for "How many heads ...").
COUNT_WINDOW = 4
_COUNT_WORD = re.compile(r"[^\W_]+(?:[.,]\d+)*")


def states_count(question: str, text: str) -> bool:
    """Whether `text` states a number of what `question` counts: a number (in digits or words)
    within COUNT_WINDOW words of a word naming it; any number when the question names nothing."""
    named = _counted_words(question)
    if not named:
        return states_number(text)
    words = _COUNT_WORD.findall(text)
    numbers = [i for i, w in enumerate(words) if _NUMBER.fullmatch(w) or w.replace(",", "").replace(".", "").isdigit()]
    names = [i for i, w in enumerate(words) if set(tokenize(w)) & named]
    return any(abs(i - j) <= COUNT_WINDOW for i in numbers for j in names)


# What an enumeration counts by its items whatever they say: a list of ways or steps, a diagram
# of stages or layers, code's lines or arguments. A count of anything else is the count of a list's
# items only when its lead-in, its heading or most of its items name it ("BERT typically uses two
# loss components:"; "Common Metrics"); the Transformer block's list does not count heads because
# one item says "Multi-head", nor does ResNet50's diagram of stages count parameters.
_ENUMERATED = {
    "list": frozenset(tokenize("ways steps stages components parts types kinds methods approaches options "
                               "techniques items points elements phases")),
    "diagram": frozenset(tokenize("stages steps layers blocks phases levels parts")),
    "code": frozenset(tokenize("steps lines arguments args")),
}


def enumerates(question: str, u: Unit, heading: str = "") -> bool:
    """Whether unit `u` (a list, a diagram or code, under `heading`) answers a quantity question by
    what it enumerates: it enumerates what the question counts (see _ENUMERATED); any enumeration
    when the question names nothing counted; never a unit of another kind."""
    if u.kind not in _ENUMERATED:
        return False
    named = _counted_words(question)
    if not named:
        return True
    if named & _ENUMERATED[u.kind]:
        return True
    lines = [ln.strip() for ln in u.quote.split("\n") if ln.strip()]
    if u.kind == "diagram":  # its lead-in and caption: the lines before its first arrow
        lead = lines[:next((i for i, ln in enumerate(lines) if _ARROW.match(ln)), 0)]
        items = [ln for ln in lines if _ARROW.match(ln)]
    else:
        lead = [u.lead_line] if u.lead_line else []
        items = lines[len(lead):]
    if named & set(tokenize(" ".join([heading, u.lead, *lead]))):
        return True
    return 2 * sum(bool(named & set(tokenize(ln))) for ln in items) > len(items)


# A name in a question: a word with a capital or a digit past its first letter ("AdamW",
# "CIFAR-10", "PyTorch"), an acronym, or a capitalised hyphenated word.
_NAME = re.compile(r"\b(?:[A-Za-z]+[A-Z0-9][\w-]*|[A-Z][a-z]+(?:-\w+)+|[A-Z]{2,}\w*)\b")
_ALNUM = re.compile(r"[a-z0-9]+")
# A code name: dotted ("asyncio.gather", "np.sqrt") or snake_case ("run_until_complete"); a name
# only as a whole, so its common pieces ("run", "until") do not make it known.
_CODE_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9]*(?:\.[A-Za-z_]\w*)+\b|\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")


def _code_names(text: str) -> list[str]:
    # "e.g", "w.r.t": abbreviations; "d_k", "x_i": a formula's subscripts (which notes often lose)
    return [m for m in _CODE_NAME.findall(text) if max(len(p) for p in re.split(r"[._]", m)) >= 3]


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The lower-case letter-and-digit runs of `texts`, and their code names run together
    ("asynciogather" for "asyncio.gather"), for `unknown_names`."""
    out: set[str] = set()
    for t in texts:
        low = t.lower()
        out.update(_ALNUM.findall(low))
        out.update("".join(_ALNUM.findall(n)) for n in _code_names(low))
    return frozenset(out)


def unknown_names(question: str, vocab: frozenset[str]) -> list[str]:
    """The names in `question` (past its first word) that `vocab` never holds: neither the name
    run together ("cifar10") nor its head (the letters it starts with, singular or plural, or
    as the start of a word: "ResNet" in "resnet50")."""
    rest = question.split(" ", 1)[1] if " " in question else ""
    # a code name is known only run together as a whole ("get_deeper_nodes")
    out = [n for n in _code_names(rest) if "".join(_ALNUM.findall(n.lower())) not in vocab]
    for name in _NAME.findall(rest):
        if any(name in n for n in out):
            continue
        pieces = _ALNUM.findall(name.lower())
        joined = "".join(pieces)
        if not pieces or {joined, joined.removesuffix("s")} & vocab:
            continue
        head = pieces[0].rstrip("0123456789")
        if len(head) < 3 or {head, head.removesuffix("s")} & vocab or any(w.startswith(head) for w in vocab):
            continue
        out.append(name)
    return out


# A definition's term: what comes before the first colon of a line or bullet, in at most
# TERM_WORDS words ("IS (Inception Score): uses a pretrained classifier ...").
_TERM = re.compile(r"^\s*(?:[-*•+]\s+)?([^:.?!]{3,60}?):\s")
TERM_WORDS = 6
_FOLD = re.compile(r"[^a-z0-9]+")


def defined_terms(text: str) -> list[str]:
    """The names a definition line defines: its term and what its brackets spell out ("IS
    (Inception Score)" -> "IS", "Inception Score"), those of at least 3 characters; [] for a line
    that defines nothing."""
    m = _TERM.match(text)
    if not m or len(m.group(1).split()) > TERM_WORDS:
        return []
    term = m.group(1)
    names = [re.sub(r"\s*\([^)]*\)", "", term).strip(), *re.findall(r"\(([^)]*)\)", term)]
    return [n for n in names if len(n) >= 3]


def named_term(question: str, text: str) -> str | None:
    """The term that `text` defines and `question` names as whole words, folded ("inception score"
    for "How does the Inception Score judge ...?" and "IS (Inception Score): ...", none for "Fréchet
    Inception Distance"); None when the question names none."""
    folded = f" {_FOLD.sub(' ', question.lower())} "
    for n in defined_terms(text):
        name = _FOLD.sub(" ", n.lower()).strip()
        head, _, tail = name.partition(" ")
        # "l1 loss" in "... between L1 and L2 loss?": its head, then a word or two, then its tail
        if f" {name} " in folded or (tail and re.search(
                rf" {re.escape(head)} (?:and|or|vs|versus) (?:\w+ ){{1,2}}{re.escape(tail)} ", folded)):
            return name
    return None


def names_term(question: str, text: str) -> bool:
    """Whether `question` names, as whole words, a term that `text` defines (`named_term`)."""
    return named_term(question, text) is not None


def asks_for_several(question: str) -> bool:
    """Whether a question asks for several things ("What are...", "ways to", "stages")."""
    return bool(_LIST_QUESTION.search(question))


# A line that explains a formula the text lost: in lower case, it carries the line before when
# there is one (`_lines`), and is only context when it opens a section.
_DANGLING = re.compile(r"where\s")


@dataclass(slots=True)
class _Line:
    start: int
    end: int
    text: str  # stripped
    kind: str  # blank, heading, bullet, arrow, code, fence, prose


def _lines(text: str) -> list[_Line]:
    out: list[_Line] = []
    pos = 0
    in_fence = False
    for raw in text.split("\n"):
        a, b = pos, pos + len(raw)
        pos = b + 1
        stripped = raw.strip()
        lead = len(raw) - len(raw.lstrip())
        a, b = a + lead, a + lead + len(stripped)
        if _FENCE.match(raw):
            kind, in_fence = "fence", not in_fence
        elif in_fence:
            kind = "code"
        elif not stripped:
            kind = "blank"
        elif _HEADING.match(raw):
            kind = "heading"
        elif _ARROW.match(raw):
            kind = "arrow"
        elif _BULLET.match(raw):
            kind = "bullet"
        elif _CODE.match(raw):
            kind = "code?"  # code only in a run of two or more such lines
        else:
            kind = "prose"
        out.append(_Line(a, b, stripped, kind))
    for i, ln in enumerate(out):
        if ln.kind == "code?":
            near = [out[j].kind for j in (i - 1, i + 1) if 0 <= j < len(out)]
            ln.kind = "code" if any(k in ("code", "code?") for k in near) else "prose"
    # a prose line that starts in lower case carries on the line before ("Instead of a for\n
    # loop in one thread"; "where is a small constant" after a formula the text lost)
    joined: list[_Line] = []
    for ln in out:
        prev = joined[-1] if joined else None
        if (prev is not None and ln.kind == "prose" and ln.text[:1].islower()
                and prev.kind in ("prose", "bullet")):
            prev.end = ln.end
            prev.text = text[prev.start:prev.end]
            continue
        joined.append(ln)
    return joined


def _words(s: str) -> int:
    return len(s.split())


def _prose(text: str, ln: _Line) -> list[tuple[int, int]]:
    """Spans (relative to `text`) of one prose line: the line, or its sentences when long,
    each fragment joined to its neighbour (a lead-in ending in ':' to the one after it)."""
    if _words(ln.text) <= MAX_LINE_WORDS:
        return [(ln.start, ln.end)]
    return _sentences(text, ln.start, ln.end)


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The sentences of `text[start:end]`, a fragment joined to the sentence before it and a
    lead-in ending in ':' or '?' to the one after it."""
    spans = [(start + a, start + b) for a, b in split_sentences(text[start:end], min_chars=1)]
    merged: list[list[int]] = []
    carry: int | None = None  # start of a lead-in waiting for its sentence
    for a, b in spans:
        s = text[a:b]
        if carry is not None:
            a, carry = carry, None
        if s.endswith((":", "?")):
            carry = a
            continue
        if merged and _words(s) < MIN_SENTENCE_WORDS:
            merged[-1][1] = b
            continue
        merged.append([a, b])
    if carry is not None:
        if merged:
            merged[-1][1] = end
        else:
            merged.append([carry, end])
    return [(a, b) for a, b in merged]


def parts(u: Unit) -> list[Unit]:
    """The smaller units inside `u` that may answer alone, in order; [] when it has none.

    A prose unit of several sentences gives its sentences (a fragment stays with the one
    before it); a diagram its arrow lines. A part keeps the unit's lead, and its kind is the
    unit's (a diagram line is a "diagram" part). Items, lists and code are not cut: a
    definition bullet keeps its term, a list has its items as units already, and the
    cross-encoder reads a lone code line poorly."""
    q = u.quote
    spans: list[tuple[int, int]] = []
    if u.kind in ("prose", "reply"):
        spans = _sentences(q, 0, len(q))
    elif u.kind == "diagram":
        for ln in _lines(q):
            if ln.kind == "fence" or _words(ln.text) == 0:
                continue
            if u.kind == "diagram" and ln.kind != "arrow":
                continue  # the caption or lead-in: a fragment, context only
            spans.append((ln.start, ln.end))
    if len(spans) < 2:
        return []
    return [Unit(u.kind, u.start + a, u.start + b, q[a:b], u.lead, 1, lead_line=u.lead_line)
            for a, b in spans]


def units_of(text: str, offset: int = 0, heading: str = "") -> list[Unit]:
    """The answer units of one section's `text`, in order; `heading` is the section's title
    (a title that is a question is the lead of what opens the section)."""
    lines = _lines(text)
    units: list[Unit] = []

    def add(kind: str, a: int, b: int, lead: str = "", items: int = 1) -> None:
        units.append(Unit(kind, offset + a, offset + b, text[a:b], lead, items))

    pending_question = heading.strip() if heading.strip().endswith("?") else ""
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.kind in ("blank", "heading"):
            if ln.kind == "heading":
                title = ln.text.lstrip("#").strip()
                pending_question = title if title.endswith("?") else ""
            i += 1
            continue
        if (ln.kind == "prose" and _DANGLING.match(ln.text) and i + 1 < len(lines)
                and lines[i + 1].kind not in ("blank", "heading")):
            # "where is predicted by a neural network." opening a section: the formula it explains
            # was lost (no line before carries it), so it says nothing alone; it is the context of
            # what follows
            pending_question = ln.text
            i += 1
            continue
        if ln.kind == "fence":
            j = i + 1
            while j < len(lines) and lines[j].kind != "fence":
                j += 1
            end = lines[min(j, len(lines) - 1)].end
            add("code", ln.start, end, pending_question)
            pending_question = ""
            i = j + 1
            continue
        if ln.kind == "code":
            j = i
            while j + 1 < len(lines) and lines[j + 1].kind == "code":
                j += 1
            add("code", ln.start, lines[j].end, pending_question)
            pending_question = ""
            i = j + 1
            continue
        # a line opening a diagram or a list: a lead-in ("Structure roughly:") and/or a
        # short caption line ("Image (3*224*224)") before arrow lines
        j = i
        lead_in = ln.kind == "prose" and ln.text.endswith(":")
        if lead_in:
            j += 1
        if (j < len(lines) and lines[j].kind == "prose" and j + 1 < len(lines)
                and lines[j + 1].kind == "arrow" and _words(lines[j].text) <= 8):
            j += 1
        if j < len(lines) and lines[j].kind == "arrow":
            k = j
            while k + 1 < len(lines) and lines[k + 1].kind == "arrow":
                k += 1
            add("diagram", ln.start, lines[k].end, pending_question, k - j + 1)
            pending_question = ""
            i = k + 1
            continue
        # any prose line right before bullets leads them in ("GBDT: builds trees ...")
        lead_in = lead_in or (ln.kind == "prose" and i + 1 < len(lines) and lines[i + 1].kind == "bullet")
        j = i + 1 if lead_in else i
        if j < len(lines) and lines[j].kind == "bullet":
            k = j
            while k + 1 < len(lines) and lines[k + 1].kind == "bullet":
                k += 1
            lead = ln.text if lead_in else pending_question
            if lead_in and not ln.text.endswith(":") and _words(ln.text) >= MIN_SENTENCE_WORDS:
                add("prose", ln.start, ln.end, pending_question)  # a sentence of its own, too
            fragments = False
            for m in range(j, k + 1):
                marker = _BULLET.match(text[lines[m].start:lines[m].end])
                a = lines[m].start + (marker.end() if marker else 0)
                if _words(text[a:lines[m].end]) < MIN_SENTENCE_WORDS:
                    fragments = True  # "- Masked Language Model (MLM)": only with its list
                    continue
                add("item", a, lines[m].end, lead)
            if k > j or lead_in or fragments:
                units.append(Unit("list", offset + ln.start, offset + lines[k].end,
                                  text[ln.start:lines[k].end], pending_question, k - j + 1,
                                  whole=fragments, lead_line=ln.text if lead_in else ""))
            pending_question = ""
            i = k + 1
            continue
        if ln.kind in ("bullet", "arrow"):  # a lone bullet, or arrows that open the text
            add("item", ln.start, ln.end, pending_question)
            pending_question = ""
            i += 1
            continue
        if ln.text.endswith("?") and _words(ln.text) <= MAX_LINE_WORDS:
            # a question line: answered by what follows (the next line's units take it as lead)
            pending_question = ln.text
            i += 1
            continue
        if ((ln.text.endswith(":") or _words(ln.text) < MIN_SENTENCE_WORDS)
                and i + 1 < len(lines) and lines[i + 1].kind == "prose"):
            # a fragment line ("Example:") is never an answer alone: it carries the next line
            add("prose", ln.start, lines[i + 1].end, pending_question)
            pending_question = ""
            i += 2
            continue
        for a, b in _prose(text, ln):
            add("prose", a, b, pending_question)
            pending_question = ""
        i += 1
    return units

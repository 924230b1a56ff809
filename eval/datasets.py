"""Labelled question sets: our JSONL format, BEIR folders and SQuAD v2 JSON.

Every loader returns a `Dataset` of `LabelledQuestion`s. Relevance is judged either by
evidence strings (our format: a node is relevant when it contains one) or by source
document (BEIR and SQuAD: a node is relevant when its document is in
`relevant_docs`). `write_corpus` writes a dataset's documents out as files so the
core pipeline can ingest them into a temporary index.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.metrics import normalize_text

CORPUS_SUFFIXES = (".md", ".markdown", ".txt")
MAPPING_FILE = "doc_ids.json"
"""Written by `write_corpus` next to the documents: file name -> document id."""

Relevance = Literal["evidence", "document"]


class DatasetError(ValueError):
    """A question set or corpus that cannot be loaded; the message says where."""


@dataclass(frozen=True)
class LabelledQuestion:
    id: str
    question: str
    answer: str
    evidence: tuple[str, ...] = ()
    answerable: bool = True
    relevant_docs: frozenset[str] = frozenset()
    # Graded relevance of the relevant documents, where the qrels grade them (NFCorpus: 1, 2);
    # a relevant document not listed here has grade 1.
    doc_grades: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""


@dataclass(frozen=True)
class Dataset:
    name: str
    questions: tuple[LabelledQuestion, ...]
    relevance: Relevance
    corpus_dir: Path | None = None
    documents: Mapping[str, Document] = field(default_factory=dict)

    @property
    def answerable(self) -> tuple[LabelledQuestion, ...]:
        return tuple(q for q in self.questions if q.answerable)

    @property
    def unanswerable(self) -> tuple[LabelledQuestion, ...]:
        return tuple(q for q in self.questions if not q.answerable)


# --- our JSONL format ------------------------------------------------------------------


def read_corpus_dir(directory: Path, suffixes: Iterable[str] | None = None) -> dict[str, str]:
    """Texts of the corpus files under `directory`, keyed by path relative to it.

    By default every suffix the ingestion pipeline takes, read as it reads them (HTML as
    its text), so evidence is checked against what the index will hold.
    """
    from index.config import MAX_FILE_BYTES
    from index.ingestion.documents import SUFFIXES, SkipFile, read_source

    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"corpus directory not found: {directory}")
    wanted = {s.lower() for s in (SUFFIXES if suffixes is None else suffixes)}
    texts: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in wanted:
            continue
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue  # the pipeline skips hidden files and folders
        try:
            texts[path.relative_to(directory).as_posix()] = read_source(path, MAX_FILE_BYTES).text
        except SkipFile:
            continue  # the pipeline skips it too (empty, binary, not UTF-8)
    if not texts:
        raise DatasetError(f"no corpus files ({', '.join(sorted(wanted))}) in {directory}")
    return texts


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise DatasetError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DatasetError(
            f"{where}: field {key!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _parse_question(obj: Any, where: str) -> LabelledQuestion:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    qid = _field(obj, "id", str, where).strip()
    question = _field(obj, "question", str, where).strip()
    if not qid:
        raise DatasetError(f"{where}: empty id")
    if not question:
        raise DatasetError(f"{where}: question {qid} has an empty question")
    answerable = _field(obj, "answerable", bool, where)
    answer = obj.get("answer", "")
    if not isinstance(answer, str):
        raise DatasetError(f"{where}: field 'answer' must be str, got {type(answer).__name__}")
    evidence = obj.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise DatasetError(f"{where}: field 'evidence' must be a list of strings")
    if any(not normalize_text(e) for e in evidence):
        raise DatasetError(f"{where}: question {qid} has an empty evidence string")
    if answerable and not evidence:
        raise DatasetError(f"{where}: question {qid} is answerable but has no evidence")
    if not answerable and evidence:
        raise DatasetError(f"{where}: question {qid} is unanswerable but has evidence")
    return LabelledQuestion(
        id=qid,
        question=question,
        answer=answer.strip(),
        evidence=tuple(evidence),
        answerable=answerable,
    )


def load_jsonl(
    path: Path, corpus_texts: Mapping[str, str] | Path | str, name: str | None = None
) -> Dataset:
    """Load our question format, checking every evidence string against the corpus.

    `corpus_texts` maps a source name to its text, or is the corpus directory. Each
    question's `relevant_docs` are the sources holding one of its evidence strings.
    Raises `DatasetError` for a malformed line (naming its line number), a duplicate
    id, evidence missing from the corpus (naming the question id), or an empty set.
    """
    path = Path(path)
    corpus_dir: Path | None = None
    if isinstance(corpus_texts, str | Path):
        corpus_dir = Path(corpus_texts)
        corpus_texts = read_corpus_dir(corpus_dir)
    if not corpus_texts:
        raise DatasetError("the corpus is empty: evidence cannot be checked")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"question file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from None

    questions: list[LabelledQuestion] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON ({exc.msg})") from None
        question = _parse_question(obj, where)
        if question.id in first_line:
            raise DatasetError(
                f"{where}: duplicate question id {question.id!r} "
                f"(first on line {first_line[question.id]})"
            )
        first_line[question.id] = lineno
        questions.append(question)
    if not questions:
        raise DatasetError(f"{path}: no questions: the set is empty")

    normalized = {source: normalize_text(text) for source, text in corpus_texts.items()}
    checked: list[LabelledQuestion] = []
    for question in questions:
        docs: set[str] = set()
        for ev in question.evidence:
            needle = normalize_text(ev)
            found = {source for source, text in normalized.items() if needle in text}
            if not found:
                raise DatasetError(
                    f"question {question.id}: evidence not found in the corpus: {ev!r}"
                )
            docs |= found
        checked.append(
            LabelledQuestion(
                id=question.id,
                question=question.question,
                answer=question.answer,
                evidence=question.evidence,
                answerable=question.answerable,
                relevant_docs=frozenset(docs),
            )
        )
    documents = {source: Document(id=source, text=text) for source, text in corpus_texts.items()}
    return Dataset(
        name=name or path.stem,
        questions=tuple(checked),
        relevance="evidence",
        corpus_dir=corpus_dir,
        documents=documents,
    )


# --- BEIR ------------------------------------------------------------------------------


def _read_jsonl_objects(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path.name} line {lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path.name} line {lineno}: expected a JSON object")
            yield lineno, obj


def _as_id(value: Any, where: str) -> str:
    # BEIR ids are strings, but some exports write numbers.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(f"{where}: missing or invalid '_id'")
    text = str(value).strip()
    if not text:
        raise DatasetError(f"{where}: empty '_id'")
    return text


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise DatasetError(
                    f"{path.name} line {lineno}: expected query-id, corpus-id, score"
                )
            try:
                score = int(float(row[2]))
            except ValueError:
                if lineno == 1:  # the header: query-id corpus-id score
                    continue
                raise DatasetError(
                    f"{path.name} line {lineno}: score must be a number, got {row[2]!r}"
                ) from None
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = score
    return qrels


def _answer_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0].strip()
    return ""


def load_beir(directory: Path, split: str = "test", name: str | None = None) -> Dataset:
    """Load a BEIR folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

    A query is answerable when its qrels list a document with a positive score; its
    `relevant_docs` are those documents. Queries judged only with score 0, or absent
    from every qrels file, are unanswerable. Queries judged only in another split's
    qrels file (BEIR's `queries.jsonl` holds every split) are left out. Qrels naming a
    document missing from the corpus are kept, as BEIR's own evaluation keeps them.
    """
    directory = Path(directory)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DatasetError(f"missing file: {qrels_path}")

    documents: dict[str, Document] = {}
    for lineno, obj in _read_jsonl_objects(directory / "corpus.jsonl"):
        where = f"corpus.jsonl line {lineno}"
        doc_id = _as_id(obj.get("_id"), where)
        text = obj.get("text", "")
        title = obj.get("title", "") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise DatasetError(f"{where}: 'title' and 'text' must be strings")
        if doc_id in documents:
            raise DatasetError(f"{where}: duplicate document id {doc_id!r}")
        documents[doc_id] = Document(id=doc_id, text=text, title=title.strip())
    if not documents:
        raise DatasetError(f"{directory / 'corpus.jsonl'}: the corpus is empty")

    qrels = _read_qrels(qrels_path)
    other_splits: set[str] = set()
    for other in sorted((directory / "qrels").glob("*.tsv")):
        if other != qrels_path:
            other_splits |= set(_read_qrels(other))

    questions: list[LabelledQuestion] = []
    seen: set[str] = set()
    for lineno, obj in _read_jsonl_objects(directory / "queries.jsonl"):
        where = f"queries.jsonl line {lineno}"
        qid = _as_id(obj.get("_id"), where)
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{where}: query {qid} has no 'text'")
        if qid in seen:
            raise DatasetError(f"{where}: duplicate query id {qid!r}")
        seen.add(qid)
        if qid not in qrels and qid in other_splits:
            continue
        relevant = frozenset(d for d, score in qrels.get(qid, {}).items() if score > 0)
        answer = _answer_text(obj.get("answer"))
        if not answer and isinstance(obj.get("metadata"), dict):
            answer = _answer_text(obj["metadata"].get("answer"))
        questions.append(
            LabelledQuestion(
                id=qid,
                question=text.strip(),
                answer=answer if relevant else "",
                answerable=bool(relevant),
                relevant_docs=relevant,
                doc_grades=tuple(sorted((d, score) for d, score in qrels.get(qid, {}).items()
                                        if score > 1)),
            )
        )
    if not questions:
        raise DatasetError(f"{directory}: no queries for split {split!r}: the set is empty")
    return Dataset(
        name=name or directory.name,
        questions=tuple(questions),
        relevance="document",
        documents=documents,
    )


# --- SQuAD v2 --------------------------------------------------------------------------


def squad_doc_id(title: str, context: str) -> str:
    """A stable id for a SQuAD paragraph: the same title and context give the same id."""
    digest = hashlib.sha1(f"{title}\n{context}".encode()).hexdigest()[:12]
    return f"{_safe_name(title)[:40] or 'paragraph'}-{digest}"


def load_squad(path: Path, name: str | None = None) -> Dataset:
    """Load SQuAD v2 JSON: each paragraph is a document, `is_impossible` is unanswerable.

    The reference answer is the first gold answer. SQuAD v1.1 files load too (every
    question with an answer is answerable).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"SQuAD file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path.name}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DatasetError(f"{path.name}: expected an object with a 'data' list (SQuAD layout)")

    documents: dict[str, Document] = {}
    questions: list[LabelledQuestion] = []
    seen: set[str] = set()
    for a, article in enumerate(raw["data"]):
        if not isinstance(article, dict):
            raise DatasetError(f"{path.name}: data[{a}] is not an object")
        title = str(article.get("title", "")).strip()
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path.name}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise DatasetError(f"{where}: missing 'context'")
            context = paragraph["context"]
            doc_id = squad_doc_id(title, context)
            documents.setdefault(doc_id, Document(id=doc_id, text=context, title=title))
            for qa in paragraph.get("qas", []):
                if not isinstance(qa, dict):
                    raise DatasetError(f"{where}: a 'qas' entry is not an object")
                qid = str(qa.get("id", "")).strip()
                text = qa.get("question")
                if not qid or not isinstance(text, str) or not text.strip():
                    raise DatasetError(f"{where}: a question lacks 'id' or 'question'")
                if qid in seen:
                    raise DatasetError(f"{where}: duplicate question id {qid!r}")
                seen.add(qid)
                answers = [
                    ans["text"].strip()
                    for ans in qa.get("answers", [])
                    if isinstance(ans, dict) and isinstance(ans.get("text"), str)
                ]
                answerable = not qa.get("is_impossible", False) and bool(answers)
                questions.append(
                    LabelledQuestion(
                        id=qid,
                        question=text.strip(),
                        answer=answers[0] if answerable else "",
                        answerable=answerable,
                        relevant_docs=frozenset({doc_id}) if answerable else frozenset(),
                    )
                )
    if not questions:
        raise DatasetError(f"{path.name}: no questions: the set is empty")
    return Dataset(
        name=name or path.stem,
        questions=tuple(questions),
        relevance="document",
        documents=documents,
    )


# --- corpus files for ingestion --------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(doc_id: str) -> str:
    return _UNSAFE.sub("_", doc_id).strip("._")


def _file_name(doc_id: str, taken: set[str]) -> str:
    stem = _safe_name(doc_id)
    suffix = ".md"
    for known in CORPUS_SUFFIXES:
        if stem.lower().endswith(known) and len(stem) > len(known):
            stem, suffix = stem[: -len(known)], stem[-len(known) :]
            break
    digest = hashlib.sha1(doc_id.encode()).hexdigest()[:10]
    # A hash keeps names unique when sanitising changed the id, when the name is long,
    # or when it collides case-insensitively (macOS, Windows) with one already written.
    if not stem or _safe_name(doc_id) != doc_id or len(stem) > 100:
        stem = f"{stem[:100]}-{digest}" if stem else digest
    if (stem + suffix).lower() in taken:
        stem = f"{stem}-{digest}"
    return stem + suffix


def write_corpus(dataset: Dataset, directory: Path) -> dict[Path, str]:
    """Write one file per document into `directory` and return file -> document id.

    Files are Markdown (`.md`, the title as a `#` heading) unless the id already ends in
    a corpus suffix; the mapping is also saved as `MAPPING_FILE` in the directory.
    """
    if not dataset.documents:
        raise DatasetError(f"dataset {dataset.name!r} has no documents to write")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    taken: set[str] = {MAPPING_FILE.lower()}
    mapping: dict[Path, str] = {}
    for doc_id, document in dataset.documents.items():
        file_name = _file_name(doc_id, taken)
        taken.add(file_name.lower())
        body = f"# {document.title}\n\n{document.text}" if document.title else document.text
        target = directory / file_name
        target.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
        mapping[target] = doc_id
    (directory / MAPPING_FILE).write_text(
        json.dumps({p.name: d for p, d in mapping.items()}, indent=1, ensure_ascii=False),
        encoding="utf-8",
    )
    return mapping


def read_corpus_mapping(directory: Path) -> dict[Path, str]:
    """The file -> document id mapping `write_corpus` saved in `directory`."""
    directory = Path(directory)
    try:
        raw = json.loads((directory / MAPPING_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"no {MAPPING_FILE} in {directory}") from None
    return {directory / name: doc_id for name, doc_id in raw.items()}

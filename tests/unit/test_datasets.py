"""Question-set loaders on tiny files, including every error they report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.datasets import (
    MAPPING_FILE,
    Dataset,
    DatasetError,
    Document,
    LabelledQuestion,
    load_beir,
    load_jsonl,
    load_squad,
    read_corpus_mapping,
    write_corpus,
)

CORPUS = {
    "a.md": "# Loss\n\nHuber Loss: uses L2 loss for small errors,\nL1 loss for large errors.\n",
    "b.md": "# CUDA\n\nShared memory does not overflow silently.\n",
}


def _line(**fields: object) -> str:
    row: dict[str, object] = {"id": "q1", "question": "What is Huber loss?"}
    row |= {"answer": "L2 then L1", "evidence": ["uses L2 loss for small errors"]}
    row |= {"answerable": True, **fields}
    return json.dumps(row)


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- our JSONL format -----------------------------------------------------------------


def test_load_jsonl(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "qs.jsonl",
        _line(evidence=["USES l2 loss  for small errors, L1 loss"]),  # spans a line break
        "",
        _line(
            id="q2",
            question="Does shared memory overflow silently?",
            answer="no",
            evidence=["does not overflow silently", "uses L2 loss for small"],
        ),
        _line(
            id="q3",
            question="Who won the 1998 World Cup?",
            answer="",
            evidence=[],
            answerable=False,
        ),
    )
    dataset = load_jsonl(path, CORPUS)
    assert dataset.name == "qs" and dataset.relevance == "evidence"
    assert [q.id for q in dataset.questions] == ["q1", "q2", "q3"]
    q1, q2, q3 = dataset.questions
    assert q1 == LabelledQuestion(
        id="q1",
        question="What is Huber loss?",
        answer="L2 then L1",
        evidence=("USES l2 loss  for small errors, L1 loss",),
        answerable=True,
        relevant_docs=frozenset({"a.md"}),
    )
    assert q2.relevant_docs == {"a.md", "b.md"}
    assert not q3.answerable and q3.relevant_docs == frozenset()
    assert dataset.unanswerable == (q3,)
    assert set(dataset.documents) == {"a.md", "b.md"}


def test_load_jsonl_from_a_corpus_directory(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    for name, text in CORPUS.items():
        (notes / name).write_text(text, encoding="utf-8")
    (notes / "ignored.json").write_text("{}", encoding="utf-8")
    dataset = load_jsonl(_write(tmp_path / "qs.jsonl", _line()), notes)
    assert dataset.corpus_dir == notes
    assert set(dataset.documents) == {"a.md", "b.md"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([_line(), "{not json"], r"qs\.jsonl line 2: invalid JSON"),
        ([_line(), "", '["a list"]'], r"line 3: expected a JSON object, got list"),
        ([json.dumps({"id": "q1", "answerable": True})], r"line 1: missing field 'question'"),
        ([_line(answerable="yes")], r"line 1: field 'answerable' must be bool, got str"),
        ([_line(id="")], r"line 1: empty id"),
        ([_line(evidence="one string")], r"line 1: field 'evidence' must be a list of strings"),
        ([_line(evidence=[])], r"line 1: question q1 is answerable but has no evidence"),
        ([_line(answerable=False)], r"line 1: question q1 is unanswerable but has evidence"),
        ([_line(evidence=[" "])], r"line 1: question q1 has an empty evidence string"),
        (
            [_line(), _line(id="q2"), _line()],
            r"line 3: duplicate question id 'q1' \(first on line 1\)",
        ),
        (
            [_line(), _line(id="q7", evidence=["not in any note"])],
            r"question q7: evidence not found in the corpus: 'not in any note'",
        ),
        (["", "  "], r"no questions: the set is empty"),
    ],
)
def test_load_jsonl_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path / "qs.jsonl", *lines)
    with pytest.raises(DatasetError, match=message):
        load_jsonl(path, CORPUS)


def test_load_jsonl_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="question file not found"):
        load_jsonl(tmp_path / "absent.jsonl", CORPUS)
    path = _write(tmp_path / "qs.jsonl", _line())
    with pytest.raises(DatasetError, match="the corpus is empty"):
        load_jsonl(path, {})
    with pytest.raises(DatasetError, match="corpus directory not found"):
        load_jsonl(path, tmp_path / "no-notes")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no corpus files"):
        load_jsonl(path, tmp_path / "empty")


# --- BEIR -----------------------------------------------------------------------------


def _beir(root: Path, *, test_qrels: str | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    _write(
        root / "corpus.jsonl",
        json.dumps({"_id": "d1", "title": "Loss", "text": "Huber loss mixes L1 and L2."}),
        json.dumps({"_id": 2, "title": "", "text": "CUDA threads."}),
        json.dumps({"_id": "d/3", "text": "Swin uses shifted windows."}),
    )
    _write(
        root / "queries.jsonl",
        json.dumps({"_id": "q1", "text": "What is Huber loss?", "answer": "mixes L1 and L2"}),
        json.dumps({"_id": "q2", "text": "Judged, nothing relevant"}),
        json.dumps({"_id": "q3", "text": "Never judged"}),
        json.dumps({"_id": "q4", "text": "A training query", "answer": "x"}),
        json.dumps({"_id": "q5", "text": "Two documents", "metadata": {"answer": ["y"]}}),
    )
    _write(
        root / "qrels" / "test.tsv",
        *(
            test_qrels.splitlines()
            if test_qrels is not None
            else ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\t2\t0", "q5\t2\t2", "q5\td/3\t1"]
        ),
    )
    _write(root / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore", "q4\td1\t1")
    return root


def test_load_beir(tmp_path: Path) -> None:
    dataset = load_beir(_beir(tmp_path / "tiny"))
    assert dataset.name == "tiny" and dataset.relevance == "document"
    assert set(dataset.documents) == {"d1", "2", "d/3"}
    assert dataset.documents["d1"] == Document(
        id="d1", text="Huber loss mixes L1 and L2.", title="Loss"
    )
    by_id = {q.id: q for q in dataset.questions}
    assert list(by_id) == ["q1", "q2", "q3", "q5"]  # q4 belongs to the train split
    assert by_id["q1"].answerable and by_id["q1"].relevant_docs == {"d1"}
    assert by_id["q1"].answer == "mixes L1 and L2"
    assert not by_id["q2"].answerable and by_id["q2"].relevant_docs == frozenset()
    assert not by_id["q3"].answerable
    assert by_id["q5"].relevant_docs == {"2", "d/3"} and by_id["q5"].answer == "y"
    assert by_id["q5"].doc_grades == (("2", 2),)  # graded qrels keep their grades (1 is implied)
    assert by_id["q1"].doc_grades == ()
    assert all(q.evidence == () for q in dataset.questions)


def test_load_beir_errors(tmp_path: Path) -> None:
    root = _beir(tmp_path / "a")
    with pytest.raises(DatasetError, match=r"missing file: .*dev\.tsv"):
        load_beir(root, split="dev")

    root = _beir(tmp_path / "b", test_qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh")
    with pytest.raises(DatasetError, match=r"test\.tsv line 2: score must be a number, got 'high'"):
        load_beir(root)

    root = _beir(tmp_path / "c", test_qrels="q1\td1")
    with pytest.raises(DatasetError, match=r"test\.tsv line 1: expected query-id, corpus-id"):
        load_beir(root)

    root = _beir(tmp_path / "d")
    with (root / "corpus.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"_id": "d4", "text": \n')
    with pytest.raises(DatasetError, match=r"corpus\.jsonl line 4: invalid JSON"):
        load_beir(root)

    root = _beir(tmp_path / "e")
    with (root / "corpus.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "d1", "text": "again"}) + "\n")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl line 4: duplicate document id 'd1'"):
        load_beir(root)

    root = _beir(tmp_path / "f")
    with (root / "queries.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "q9"}) + "\n")
    with pytest.raises(DatasetError, match=r"queries\.jsonl line 6: query q9 has no 'text'"):
        load_beir(root)

    root = _beir(tmp_path / "g")
    (root / "queries.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no queries for split 'test': the set is empty"):
        load_beir(root)

    root = _beir(tmp_path / "h")
    (root / "corpus.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="the corpus is empty"):
        load_beir(root)


# --- SQuAD v2 -------------------------------------------------------------------------

SQUAD = {
    "version": "v2.0",
    "data": [
        {
            "title": "Normans",
            "paragraphs": [
                {
                    "context": "The Normans gave their name to Normandy.",
                    "qas": [
                        {
                            "id": "s1",
                            "question": "What region is named after the Normans?",
                            "answers": [
                                {"text": "Normandy", "answer_start": 31},
                                {"text": "Normandy, France", "answer_start": 31},
                            ],
                            "is_impossible": False,
                        },
                        {
                            "id": "s2",
                            "question": "Who named Normandy in 1200?",
                            "answers": [],
                            "plausible_answers": [{"text": "Normans", "answer_start": 4}],
                            "is_impossible": True,
                        },
                    ],
                },
                {"context": "Rollo was a Viking leader.", "qas": []},
            ],
        }
    ],
}


def test_load_squad(tmp_path: Path) -> None:
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    dataset = load_squad(path)
    assert dataset.name == "dev-v2.0" and dataset.relevance == "document"
    assert len(dataset.documents) == 2
    s1, s2 = dataset.questions
    assert s1.answerable and s1.answer == "Normandy"
    (doc_id,) = s1.relevant_docs
    assert dataset.documents[doc_id].text == "The Normans gave their name to Normandy."
    assert dataset.documents[doc_id].title == "Normans"
    assert not s2.answerable and s2.answer == "" and s2.relevant_docs == frozenset()
    # Ids are stable from one load to the next.
    assert load_squad(path).questions[0].relevant_docs == {doc_id}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"data": [', r"invalid JSON at line 1"),
        ('{"version": "v2.0"}', r"expected an object with a 'data' list"),
        (
            json.dumps({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}),
            r"data\[0\]\.paragraphs\[0\]: missing 'context'",
        ),
        (
            json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": []}]}]}),
            r"no questions: the set is empty",
        ),
        (
            json.dumps(
                {
                    "data": [
                        {
                            "title": "t",
                            "paragraphs": [
                                {
                                    "context": "c",
                                    "qas": [{"id": "x", "question": "q?", "answers": []}] * 2,
                                }
                            ],
                        }
                    ]
                }
            ),
            r"duplicate question id 'x'",
        ),
    ],
)
def test_load_squad_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "squad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_squad(path)


def test_load_squad_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="SQuAD file not found"):
        load_squad(tmp_path / "absent.json")


# --- writing a corpus for ingestion ---------------------------------------------------


def test_write_corpus(tmp_path: Path) -> None:
    docs = {
        d.id: d
        for d in [
            Document("d1", "Huber loss.", "Loss"),
            Document("a/b", "slash"),
            Document("a_b", "underscore"),
            Document("Doc", "upper"),
            Document("doc", "lower"),
            Document("notes.md", "# Already Markdown\n\ntext"),
            Document("x" * 300, "long id"),
        ]
    }
    dataset = Dataset("tiny", (), "document", documents=docs)
    mapping = write_corpus(dataset, tmp_path / "corpus")
    assert sorted(mapping.values()) == sorted(docs)
    names = [p.name for p in mapping]
    assert len({n.lower() for n in names}) == len(names), names  # unique, even case-folded
    assert all(p.parent == tmp_path / "corpus" and p.suffix == ".md" for p in mapping)
    assert all(len(n) < 160 for n in names)
    by_id = {doc_id: path for path, doc_id in mapping.items()}
    assert by_id["d1"].name == "d1.md"
    assert by_id["d1"].read_text(encoding="utf-8") == "# Loss\n\nHuber loss.\n"
    assert by_id["notes.md"].name == "notes.md"
    assert by_id["a/b"].read_text(encoding="utf-8") == "slash\n"
    assert read_corpus_mapping(tmp_path / "corpus") == mapping
    assert (tmp_path / "corpus" / MAPPING_FILE).is_file()


def test_write_corpus_of_a_jsonl_dataset_keeps_file_names(tmp_path: Path) -> None:
    dataset = load_jsonl(_write(tmp_path / "qs.jsonl", _line()), CORPUS)
    mapping = write_corpus(dataset, tmp_path / "out")
    assert {p.name: d for p, d in mapping.items()} == {"a.md": "a.md", "b.md": "b.md"}
    assert (tmp_path / "out" / "a.md").read_text(encoding="utf-8") == CORPUS["a.md"]


def test_write_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset 'empty' has no documents to write"):
        write_corpus(Dataset("empty", (), "document"), tmp_path)
    with pytest.raises(DatasetError, match=f"no {MAPPING_FILE} in"):
        read_corpus_mapping(tmp_path)

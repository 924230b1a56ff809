from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.answer.extractive import NOT_FOUND, extract_answer
from index.store.sentences import split_sentences


@pytest.mark.parametrize("text, expected", [
    ("One. Two three.", ["One.", "Two three."]),
    ("- Use dropout\n- Use normalization", ["Use dropout", "Use normalization"]),
    ("It is good, e.g. Adam. Then more.", ["It is good, e.g. Adam.", "Then more."]),
    ("have io_uring\nand AIO to support it.", ["have io_uring\nand AIO to support it."]),
    ("Key points:\n- a skip\n\n", ["Key points:", "a skip"]),
    ("   \n- \n", []),
])
def test_split_sentences(text, expected):
    assert [text[a:b] for a, b in split_sentences(text)] == expected


def answer(retriever, question):
    qv = retriever.embed_queries([question])[0]
    return extract_answer(question, qv, retriever.search(question, k=5, query_vector=qv), retriever.snapshot)


def test_huber_answer_is_cited_and_verified(notes_retriever):
    a = answer(notes_retriever, "What is Huber loss?")
    assert a.answerable
    assert "uses L2 loss for small errors, L1 loss for large errors" in a.text
    assert a.text.endswith("[1]") and "[" not in a.plain
    c = a.citations[0]
    assert c.heading_path[-1] == "Loss" and Path(c.source).name == "01-fundamentals-of-deep-learning.md"
    assert Path(c.source).read_text(encoding="utf-8")[c.start:c.end] == c.quote
    assert c.quote in notes_retriever.snapshot.tree[c.node_id].text


def test_lead_in_line_brings_its_list(notes_retriever):
    a = answer(notes_retriever, "Which loss components does BERT use?")
    assert a.answerable
    assert "BERT typically uses two loss components:" in a.text
    for part in ("Masked Language Model (MLM)", "Next Sentence Prediction (NSP)"):
        assert part in a.text
    assert "GPT" not in a.text  # the list ends where the bullets end


def test_off_topic_question_is_not_answered(notes_retriever):
    a = answer(notes_retriever, "How do I bake sourdough bread at home?")
    assert not a.answerable and a.text == NOT_FOUND and a.citations == []


def test_threshold_and_arguments(notes_retriever):
    q = "What is Huber loss?"
    qv = notes_retriever.embed_queries([q])[0]
    hits = notes_retriever.search(q, k=5, query_vector=qv)
    snap = notes_retriever.snapshot
    assert not extract_answer(q, qv, hits, snap, threshold=0.999).answerable
    assert not extract_answer(q, qv, [], snap).answerable
    with pytest.raises(ValueError, match="max_sentences must be >= 1, got 0"):
        extract_answer(q, qv, hits, snap, max_sentences=0)


def test_units_of_unequal_length_scored_in_one_call_keep_their_order(reranker):
    q = "Which GAN metric is lower-is-better?"
    passages = ["FID: measures distribution similarity between generated and real images. Lower is better.",
                "asyncio runs coroutines in one thread.",
                "PSNR focuses on pixel-level difference between two images of the same size. Higher is better.",
                "Boil the egg."]
    grouped = reranker.score(q, passages)  # one call, as _rescore makes it
    alone = [float(reranker.score(q, [p])[0]) for p in passages]
    assert grouped.shape == (4,)
    # int8 activation scales follow the run, so a logit would move with its company; the packaged
    # model runs each pair alone, sorted by length, so its score is the pair's own
    assert max(abs(g - a) for g, a in zip(grouped, alone, strict=True)) < 0.5
    np.testing.assert_allclose(grouped, alone, atol=1e-6)
    assert int(grouped.argmax()) == 0 and sorted(range(4), key=lambda i: -grouped[i])[:2] == [0, 2]


def test_a_lead_in_line_is_a_candidate_of_its_own() -> None:
    from index.answer.extractive import _Candidate, _lead_of
    from index.answer.units import units_of

    text = "A first line of prose comes here.\nGBDT: builds trees in sequence, each fitting the residual.\n- XGBoost is a common one.\n"
    (lst,) = [u for u in units_of(text, offset=10) if u.kind == "list"]
    lead = _lead_of(_Candidate(lst, "s.md", ("ML",), 0, 1, 0.5, 0.6), 2.5)
    assert lead is not None and lead.unit.kind == "prose" and lead.score == 2.5
    assert lead.unit.quote == "GBDT: builds trees in sequence, each fitting the residual."
    assert text[lead.unit.start - 10:lead.unit.end - 10] == lead.unit.quote
    (plain,) = [u for u in units_of("- one two three four\n- five six seven eight\n") if u.kind == "list"]
    assert _lead_of(_Candidate(plain, "s.md", (), 0, 0, 0.5, 0.6), 1.0) is None  # no lead-in: none


@pytest.mark.slow
def test_a_question_for_one_thing_gets_a_lead_in_or_its_item_not_the_list(notes_retriever, ask):
    q = "How does gradient boosting build its trees?"
    a = ask(q)
    assert a.plain.startswith("Gradient Boosted Decision Trees (GBDT): builds decision trees in sequence")
    # the lead-in answers alone: the item under it adds nothing to the cross-encoder's score
    assert len(a.citations) == 1 and not any(name in a.plain for name in ("XGBoost", "LightGBM", "CatBoost"))
    node = notes_retriever.snapshot.tree[a.citations[0].node_id]
    assert a.citations[0].quote in node.text
    # an item that says little without its lead-in keeps it
    q = "Name a common implementation of gradient boosted decision trees."
    a = ask(q)
    assert [c.quote.lstrip("- ")[:8] for c in a.citations] == ["Gradient", "XGBoost "], a.plain


@pytest.mark.slow
def test_a_count_the_answer_does_not_state_is_not_covered_but_an_enumeration_states_one(ask):
    # the BERT lines state a number (30,000 tokens), never a count of parameters
    bert = ask("How many parameters does BERT have?")
    assert not bert.answerable and bert.text == NOT_FOUND, bert.text
    # a random forest's line names trees and no number
    assert not ask("How many trees does a random forest use?").answerable
    # a diagram or a list answers a count by what it enumerates, numbers or not
    stages = ask("How many stages does ResNet50 have?")
    assert stages.answerable and "-> Conv5 -> 2048*7*7" in stages.plain
    ways = ask("How many ways are there to reduce overfitting?")
    assert ways.answerable and not ways.low_confidence and "Use dropout" in ways.plain


@pytest.mark.slow
def test_the_definition_of_the_term_a_question_names_answers_it(notes_retriever, reranker, monkeypatch):
    import index.answer.extractive as ex

    q = "Explain how a decision tree works."
    qv = notes_retriever.embed_queries([q])[0]
    hits = notes_retriever.search(q, k=5, query_vector=qv)
    a = extract_answer(q, qv, hits, notes_retriever.snapshot, reranker=reranker)
    assert a.plain == "Decision Tree: iteratively split on feature conditions.", a.plain
    # without the bonus the cross-encoder picks the GBDT line; the confidence is the same either way
    monkeypatch.setattr(ex, "TERM_BONUS", 0.0)
    plain = extract_answer(q, qv, hits, notes_retriever.snapshot, reranker=reranker)
    assert plain.plain.startswith("Gradient Boosted Decision Trees") and plain.confidence == a.confidence


@pytest.mark.slow
def test_an_enumeration_answers_a_count_only_of_what_it_enumerates(ask):
    # the Transformer block's list names "Multi-head", and counts no heads; ResNet50's diagram of
    # stages counts no parameters: neither is given as a sure answer
    for q in ("How many heads does multi-head attention in BERT use?", "How many parameters does ResNet-50 have?"):
        a = ask(q)
        assert not a.answerable or a.low_confidence, (q, a.plain, a.confidence)
    # a list or a diagram of what is counted still answers
    stages = ask("How many stages does ResNet50 have?")
    assert stages.answerable and not stages.low_confidence and "-> Conv5 -> 2048*7*7" in stages.plain
    losses = ask("How many loss components does BERT use?")
    assert losses.answerable and not losses.low_confidence and "Next Sentence Prediction" in losses.plain


@pytest.mark.slow
def test_quantity_probes_outside_the_labelled_set(ask):
    """bench/probes/quantity.jsonl: questions written apart from data/questions.jsonl, so that the
    quantity check is not fitted to the labelled set alone (`python -m bench.abstention probe`)."""
    import json

    from eval.metrics import states_evidence

    path = Path(__file__).resolve().parents[2] / "bench" / "probes" / "quantity.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    withheld, right = 0, 0
    for r in rows:
        a = ask(r["question"])
        if r["answerable"]:
            assert a.answerable, r["question"]  # never "not covered" for what the notes answer
            right += any(states_evidence(a.plain, e) for e in r["evidence"])
        else:
            withheld += not a.answerable or a.low_confidence
    answerable = sum(r["answerable"] for r in rows)
    # measured: 13 of 14 unanswerable withheld or flagged (9 + 1 before the check counted what it
    # enumerates), 11 of 12 answerable right; a margin below both
    assert withheld >= len(rows) - answerable - 4 and right >= answerable - 2, (withheld, right)

"""OpenAI compatibility: the official `openai` client (sync and streaming) against a real uvicorn."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import QUERY_KEY, ServerThread, assert_cites_huber, auth


@pytest.fixture(scope="module")
def oai(live_server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=QUERY_KEY, max_retries=0, timeout=30)


def test_openai_client_gets_a_cited_answer(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="notesrag",
                                       messages=[{"role": "user", "content": "What is Huber loss?"}])
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    content = resp.choices[0].message.content or ""
    extra = resp.model_extra or {}
    cite = extra["citations"][0]
    assert_cites_huber(cite)
    assert cite["quote"] in content and "[1]" in content
    assert extra["notesrag"]["answerable"] is True and extra["notesrag"]["contexts"]


def test_openai_client_streams_chunks_until_done(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model="notesrag", stream=True,
                                         messages=[{"role": "user", "content": "What is Huber loss?"}])
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    cite = (last.model_extra or {})["citations"][0]
    assert_cites_huber(cite)
    assert cite["quote"] in text and "[1]" in text
    assert len({c.id for c in chunks}) == 1


def test_follow_up_uses_the_earlier_turn(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is batch normalization?"},
                {"role": "assistant", "content": "Batch Norm normalizes across the batch dimension."},
                {"role": "user", "content": "and what about layer norm?"}]
    resp = oai.chat.completions.create(model="notesrag", messages=messages)  # type: ignore[arg-type]
    content = resp.choices[0].message.content or ""
    assert "Layer Norm" in content
    extra = resp.model_extra or {}
    assert "batch normalization" in extra["notesrag"]["retrieval_query"]
    assert any("Norm" in " ".join(c["heading_path"]) for c in extra["citations"])


def test_a_new_topic_in_the_same_chat_is_answered_from_its_own_section(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Which dimensions does batch normalization normalize over?"},
                {"role": "assistant", "content": "Batch Norm normalizes over the batch dimension."},
                {"role": "user", "content": "What are the common GAN metrics?"}]
    resp = oai.chat.completions.create(model="notesrag", messages=messages)  # type: ignore[arg-type]
    extra = resp.model_extra or {}
    assert extra["notesrag"]["retrieval_query"] == "What are the common GAN metrics?"
    assert "FID" in (resp.choices[0].message.content or "")
    assert any("GAN" in " ".join(c["heading_path"]) for c in extra["citations"])


def test_openai_client_sees_auth_errors(live_server: ServerThread) -> None:
    bad = openai.OpenAI(base_url=live_server.url + "/v1", api_key="wrong-key-123456", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="notesrag", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    body = e.value.body
    assert isinstance(body, dict) and body["code"] == "unauthorized"  # the client unwraps "error"


def test_models_list(oai: openai.OpenAI) -> None:
    assert [m.id for m in oai.models.list()] == ["notesrag"]


def test_sse_arrives_incrementally_over_a_real_socket(live_server: ServerThread) -> None:
    with httpx.stream("POST", live_server.url + "/v1/ask", headers=auth(),
                      json={"question": "What does dropout do?", "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[0] == "contexts" and events[-1] == "done" and "delta" in events


def test_real_server_errors_are_json(live_server: ServerThread) -> None:
    r = httpx.post(live_server.url + "/v1/ask", headers=auth(), content=b"x" * 40_000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = httpx.get(live_server.url + "/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(live_server.url + "/readyz")
    assert r.status_code == 200 and r.json()["index_kind"] == "flat" and r.json()["device"] in ("cpu", "cuda")
    assert r.json()["index"]["encoder_backend"] in ("onnx-int8", "onnx", "torch")

"""A minimal OpenAI-compatible chat-completions server for tests: it answers from the passages
it was sent, and can be told to fail, hang, break a stream, decline or invent."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

Mode = Literal["echo", "fail", "hang", "break", "not_found", "invent"]
INVENTED = "Bananas are grown on the moon by trained cats [1]. Nobody has ever measured it [2]."
PASSAGE = re.compile(r"<<<PASSAGE (\d+) (\w+)>>>\n(.*?)\n<<<END PASSAGE \1 \2>>>", re.S)


@dataclass
class StubState:
    mode: Mode = "echo"
    hang_s: float = 5.0
    requests: list[dict[str, Any]] = field(default_factory=list)


def passages(prompt: str) -> dict[int, str]:
    """Passage number -> fenced block (source and section lines, a blank line, then the text)."""
    return {int(m.group(1)): m.group(3) for m in PASSAGE.finditer(prompt)}


def echo_answer(messages: list[dict[str, Any]]) -> str:
    found = passages(messages[-1]["content"])
    if not found:
        return "NOT_FOUND"
    def first_line(n: int) -> str:
        # the first line that reads as a sentence of its own: a fragment that starts in lower case
        # (what is left of a line whose formula was lost) would join the sentence before it
        text = found[n].split("\n\n", 1)[-1]
        lines = [line.strip("- ").rstrip(".") for line in text.splitlines() if line.strip("- ")]
        return next((line for line in lines if not line[0].islower()), lines[0] if lines else "")

    # each sentence restates a line of the passage it cites, so the citation check keeps both
    return f"{first_line(1)} [1]. {first_line(min(2, len(found)))} [{min(2, len(found))}]."


def make_app(state: StubState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        if state.mode == "fail":
            return JSONResponse({"error": {"message": "model exploded"}}, status_code=500)
        if state.mode == "hang":
            await asyncio.sleep(state.hang_s)
        content = ("NOT_FOUND" if state.mode == "not_found" else INVENTED if state.mode == "invent"
                   else echo_answer(body["messages"]))
        if not body.get("stream"):
            return {"id": "stub-1", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}]}
        return StreamingResponse(_stream(content, state.mode == "break"), media_type="text/event-stream")

    return app


async def _stream(content: str, breaks: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any]) -> bytes:
        return ("data: " + json.dumps({"id": "stub-1", "object": "chat.completion.chunk", "created": 0,
                                       "model": "stub", "choices": [{"index": 0, "delta": delta}]}) + "\n\n").encode()

    yield chunk({"role": "assistant", "content": ""})
    words = re.findall(r"\S+\s*", content)
    for i, w in enumerate(words):
        if breaks and i == 3:
            raise RuntimeError("stream broken on purpose")
        yield chunk({"content": w})
        await asyncio.sleep(0)
    yield b"data: [DONE]\n\n"

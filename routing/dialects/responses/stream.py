"""One streamed answer as Responses events: a state machine over canonical chunks.

Each output item (reasoning, a message, a function call) opens with ``response.output_item.added``
when its first delta arrives and closes, with its ``.done`` events, when the next item opens or
the answer ends. Every event carries the stream's ``sequence_number``.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.dialects.base import Choices, ClientUsage
from routing.dialects.responses.objects import (
    call_item,
    final_status,
    item_id,
    message_item,
    output_text,
    reasoning_item,
    refusal_part,
    response_object,
)
from routing.errors import RouterError
from routing.vendors.base import TextRun

# Canonical delta members holding reasoning text (vendors use either name).
_REASONING = ("reasoning_content", "reasoning")
_DELTA_HEAD = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
_DELTA_TAIL = b',"logprobs":[]}\n\n'
_PREFIX = {"message": "msg", "refusal": "msg", "reasoning": "rs", "function_call": "fc"}


class OpenItem:
    """An output item whose deltas are still arriving."""

    __slots__ = ("call_id", "delta_head", "id", "index", "kind", "name", "pieces")

    def __init__(self, kind: str, generation_id: str, index: int, call_id: str = "", name: str = "") -> None:
        self.kind = kind
        self.index = index  # its output_index
        self.id = item_id(_PREFIX[kind], generation_id, index)
        # The text, reasoning text or arguments so far: joined once at the end (``+=`` on an
        # attribute copies the whole text for every delta).
        self.pieces: list[str] = []
        self.call_id = call_id
        self.name = name
        # What an output_text delta event of this item says between its sequence number and its text.
        where = orjson.dumps({"item_id": self.id, "output_index": index, "content_index": 0})
        self.delta_head = b"," + where[1:-1] + b',"delta":'

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class ResponsesStream:
    """The Responses events of one streamed answer, and the Response object they build up."""

    __slots__ = (
        "calls",
        "created",
        "echo",
        "final",
        "finish_reason",
        "generation_id",
        "item",
        "model",
        "output",
        "sequence",
        "started",
    )

    def __init__(self, generation_id: str, created: int, model: str, echo: dict[str, Any]) -> None:
        self.generation_id = generation_id
        self.created = created
        self.model = model
        self.echo = echo
        self.sequence = 0
        self.started = False  # response.created was rendered
        self.output: list[dict[str, Any]] = []  # the items closed so far
        self.item: OpenItem | None = None
        self.calls: dict[int, OpenItem] = {}  # by the vendor's tool-call index
        self.finish_reason = ""
        self.final: dict[str, Any] | None = None  # the Response object of the last event

    # -- the renderer's interface ---------------------------------------------------------

    def chunk(self, choices: Choices, extra: dict[str, Any] | None, native: dict[str, Any] | None = None) -> bytes:
        out: list[bytes] = []
        if len(choices) == 1 and self.item is not None and self.item.kind == "message":
            # Most chunks of most streams: more text of the open message, and nothing else.
            choice = choices[0]
            delta = choice.get("delta")
            if type(delta) is dict and delta.keys() == {"content"} and not choice.get("finish_reason"):
                text = delta["content"]
                if type(text) is str and text and not choice.get("index"):
                    self.text(out, text)
                    return b"".join(out)
        self.preamble(out)
        for choice in choices:
            if choice.get("index", 0) != 0:
                continue  # n is 1: no other choice is asked for
            delta = choice.get("delta") or {}
            for name in _REASONING:
                if isinstance(text := delta.get(name), str) and text:
                    self.reasoning(out, text)
            if isinstance(text := delta.get("content"), str) and text:
                self.text(out, text)
            if isinstance(text := delta.get("refusal"), str) and text:
                self.refusal(out, text)
            for call in delta.get("tool_calls") or ():
                self.call(out, call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return b"".join(out)

    def text_run(self, run: TextRun) -> bytes | None:
        # As ``chunk`` renders each while a message is open: a text's JSON string is its bytes.
        item, shape = self.item, run.shape
        if item is None or item.kind != "message" or shape.delta.keys() != {"content"} or shape.choice.get("index"):
            return None
        item.pieces += run.texts
        out: list[bytes] = []
        sequence = self.sequence
        for raw in run.raws:
            if raw:  # an empty text is no event
                out += (_DELTA_HEAD, str(sequence).encode(), item.delta_head, b'"', raw, b'"', _DELTA_TAIL)
                sequence += 1
        self.sequence = sequence
        return b"".join(out)

    def cut(self, choices: Choices) -> bytes:
        return self.chunk(choices, None)

    def finish(self, usage: ClientUsage | None) -> bytes:
        out: list[bytes] = []
        self.preamble(out)
        self.close(out)
        status = final_status(self.finish_reason)
        response = self.final = self.response(status, usage)
        self.event(out, "response.completed" if status == "completed" else "response.incomplete", response=response)
        return b"".join(out)

    def error(self, error: RouterError) -> bytes:
        """The documented ``error`` event, then ``response.failed``: the stream ends."""
        out: list[bytes] = []
        self.preamble(out)
        code = error.code or "server_error"
        self.event(out, "error", code=code, message=error.message, param=error.param)
        failure = {"code": code, "message": error.message}
        self.final = self.response("failed", None, failure)
        self.event(out, "response.failed", response=self.final)
        return b"".join(out)

    # -- events ---------------------------------------------------------------------------

    def event(self, out: list[bytes], kind: str, **members: Any) -> None:
        payload = {"type": kind, "sequence_number": self.sequence, **members}
        self.sequence += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")

    def response(self, status: str, usage: ClientUsage | None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            self.generation_id, self.created, self.model, self.echo,
            status=status, output=list(self.output), usage=usage, finish=self.finish_reason, error=error,
        )  # fmt: skip

    def preamble(self, out: list[bytes]) -> None:
        if self.started:
            return
        self.started = True
        response = self.response("in_progress", None)
        self.event(out, "response.created", response=response)
        self.event(out, "response.in_progress", response=response)

    def opened(self, out: list[bytes], kind: str, call_id: str = "", name: str = "") -> OpenItem:
        """Close the open item and open one of ``kind`` after it."""
        self.close(out)
        item = self.item = OpenItem(kind, self.generation_id, len(self.output), call_id, name)
        if kind == "message":
            added = message_item(self.generation_id, item.index, "", status="in_progress")
            self.event(out, "response.output_item.added", output_index=item.index, item=added)
            self.part(out, "response.content_part.added", item, output_text(""))
        elif kind == "refusal":
            added = message_item(self.generation_id, item.index, "", status="in_progress")
            self.event(out, "response.output_item.added", output_index=item.index, item=added)
            self.part(out, "response.content_part.added", item, refusal_part(""))
        elif kind == "reasoning":
            added = reasoning_item(self.generation_id, item.index, None)
            self.event(out, "response.output_item.added", output_index=item.index, item=added)
            self.part(out, "response.content_part.added", item, {"type": "reasoning_text", "text": ""})
        else:
            added = call_item(self.generation_id, item.index, call_id, name, "", status="in_progress")
            self.event(out, "response.output_item.added", output_index=item.index, item=added)
        return item

    def part(self, out: list[bytes], kind: str, item: OpenItem, part: dict[str, Any]) -> None:
        self.event(out, kind, item_id=item.id, output_index=item.index, content_index=0, part=part)

    def text(self, out: list[bytes], text: str) -> None:
        item = self.item if self.item is not None and self.item.kind == "message" else self.opened(out, "message")
        item.pieces.append(text)
        # The most frequent event of every stream, written from the item's prepared bytes (the
        # same JSON as ``event`` writes, member for member).
        sequence, self.sequence = self.sequence, self.sequence + 1
        out += (_DELTA_HEAD, str(sequence).encode(), item.delta_head, orjson.dumps(text), _DELTA_TAIL)

    def refusal(self, out: list[bytes], text: str) -> None:
        item = self.item if self.item is not None and self.item.kind == "refusal" else self.opened(out, "refusal")
        item.pieces.append(text)
        self.event(out, "response.refusal.delta", item_id=item.id, output_index=item.index, content_index=0, delta=text)

    def reasoning(self, out: list[bytes], text: str) -> None:
        item = self.item if self.item is not None and self.item.kind == "reasoning" else self.opened(out, "reasoning")
        item.pieces.append(text)
        self.event(
            out, "response.reasoning_text.delta", item_id=item.id, output_index=item.index, content_index=0, delta=text
        )

    def call(self, out: list[bytes], call: dict[str, Any]) -> None:
        function = call.get("function") or {}
        index = call.get("index", 0)
        item = self.calls.get(index)
        if item is None:
            item = self.opened(out, "function_call", call.get("id") or "", function.get("name") or "")
            self.calls[index] = item
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.pieces.append(arguments)
            self.event(
                out, "response.function_call_arguments.delta", item_id=item.id, output_index=item.index, delta=arguments
            )

    def close(self, out: list[bytes]) -> None:
        """Close the open item: its ``.done`` events, then ``response.output_item.done``."""
        item, self.item = self.item, None
        if item is None:
            return
        generation_id, where = self.generation_id, {"item_id": item.id, "output_index": item.index}
        text = item.text
        if item.kind == "message":
            self.event(out, "response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            self.part(out, "response.content_part.done", item, output_text(text))
            done = message_item(generation_id, item.index, text)
        elif item.kind == "refusal":
            self.event(out, "response.refusal.done", **where, content_index=0, refusal=text)
            self.part(out, "response.content_part.done", item, refusal_part(text))
            done = message_item(generation_id, item.index, text, part=refusal_part(text))
        elif item.kind == "reasoning":
            self.event(out, "response.reasoning_text.done", **where, content_index=0, text=text)
            self.part(out, "response.content_part.done", item, {"type": "reasoning_text", "text": text})
            done = reasoning_item(generation_id, item.index, text)
        else:
            self.event(out, "response.function_call_arguments.done", **where, name=item.name, arguments=text)
            done = call_item(generation_id, item.index, item.call_id, item.name, text)
        self.output.append(done)
        self.event(out, "response.output_item.done", output_index=item.index, item=done)

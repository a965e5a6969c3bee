"""The Bedrock adapter end to end, answers: the live router, a fake Bedrock on loopback speaking event-stream frames.

The fake checks every request's SigV4 signature (or bearer key) and answers 403 when it is
wrong, so every 200 here also proves the router signed exactly what it sent. The ``bedrock``
fixture (``routing/tests/conftest.py``) starts a fake and routes a model and a key to it.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from fakevendors.bedrock import PROMPT_TOKENS
from fakevendors.openai import words
from routing.tests.bedrock_helpers import MODEL_ID, TOOLS
from routing.tests.sse_client import content_of
from routing.tests.vendor_cast import MESSAGES, sse_chunks, tool_calls_of


def test_stream_relays_converse_stream_as_openai_chunks(bedrock):
    cast, fake = bedrock(tokens=6)
    response = cast.chat(
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."}, *MESSAGES],
        max_tokens=50,
        temperature=0.3,
        stop="END",
    )
    assert response.status_code == 200, response.text
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(6))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    request = fake.last()
    assert fake.auth_failures == []
    assert request.path == f"/model/{MODEL_ID.replace(':', '%3A')}/converse-stream"
    assert request.json() == {
        "messages": [{"role": "user", "content": [{"text": MESSAGES[0]["content"]}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.3, "stopSequences": ["END"]},
    }
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.usage_source, record.finish_reason) == ("completed", "vendor", "stop")
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 6)
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (PROMPT_TOKENS, 6)
    assert record.cost == Decimal(PROMPT_TOKENS * 1 + 6 * 2) / 1_000_000


def test_frames_split_at_any_byte_are_reassembled(bedrock):
    cast, _ = bedrock(tokens=9, split_bytes=7)
    response = cast.chat(stream=True)
    assert "".join(content_of(c) for c in sse_chunks(response.text)) == "".join(words(9))


def test_non_streaming_answer_uses_converse(bedrock):
    cast, fake = bedrock(tokens=4, cache_read_tokens=5)
    response = cast.chat(max_tokens=50)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "".join(words(4))}
    assert body["choices"][0]["finish_reason"] == "stop"
    # Converse counts cache reads apart from inputTokens; OpenAI's prompt includes them.
    assert body["usage"]["prompt_tokens"] == PROMPT_TOKENS + 5
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    assert body["usage"]["completion_tokens"] == 4
    assert fake.last().path.endswith("/converse") and fake.auth_failures == []
    record = cast.record(body["id"])
    assert (record.status, record.streamed, record.completion_tokens, record.cached_tokens) == (
        "completed",
        False,
        4,
        5,
    )


def test_max_tokens_stop_reason_becomes_length(bedrock):
    cast, _ = bedrock(tokens=10)
    response = cast.chat(stream=True, max_tokens=3)
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(3))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_tool_call_round_trip(bedrock):
    cast, fake = bedrock(tokens=3, tool_call=True)
    question = {"role": "user", "content": "Weather in the cat sat?"}
    response = cast.chat(stream=True, messages=[question], tools=TOOLS, tool_choice="required")
    assert response.status_code == 200, response.text
    chunks = sse_chunks(response.text)
    calls = tool_calls_of(chunks)
    assert calls[0] == {
        "index": 0,
        "id": "tooluse_fake1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert {c["index"] for c in calls} == {0}
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert orjson.loads(arguments) == {"city": "the cat sat"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    sent = fake.last().json()
    assert sent["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "inputSchema": {"json": TOOLS[0]["function"]["parameters"]},
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    record = cast.record(response.headers["x-generation-id"])
    assert record.finish_reason == "tool_calls"

    call = {"id": calls[0]["id"], "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    follow_up = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"},
        {"role": "tool", "tool_call_id": call["id"], "content": "(second result)"},
    ]
    response = cast.chat(messages=follow_up, tools=TOOLS)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "".join(words(3))
    sent = fake.last().json()
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": question["content"]}]},
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "tooluse_fake1", "name": "get_weather", "input": {"city": "the cat sat"}}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "tooluse_fake1", "content": [{"text": "Sunny, 21 C"}]}},
                {"toolResult": {"toolUseId": "tooluse_fake1", "content": [{"text": "(second result)"}]}},
            ],
        },
    ]
    assert "toolChoice" not in sent["toolConfig"]
    assert fake.auth_failures == []


def test_non_streamed_tool_call_has_json_arguments(bedrock):
    cast, fake = bedrock(tokens=2, tool_call=True)
    response = cast.chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "tooluse_fake1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"the cat"}'},
        }
    ]
    assert fake.last().json()["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}


def test_reasoning_is_relayed_as_reasoning_content(bedrock):
    cast, _ = bedrock(tokens=2, reasoning_tokens=3)
    chunks = sse_chunks(cast.chat(stream=True).text)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "".join(words(3))
    assert "".join(content_of(c) for c in chunks) == "".join(words(2))


def test_unsupported_image_url_is_a_clear_400(bedrock):
    cast, fake = bedrock()
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
    ]
    response = cast.chat(messages=[{"role": "user", "content": content}])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[1]" and "data URL" in error["message"]
    assert fake.requests == []

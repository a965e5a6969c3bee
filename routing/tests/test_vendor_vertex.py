"""Vertex AI end to end, answers: the live router, the fake Vertex (Gemini and Claude) and its token endpoint.

``vertex_casts`` (``routing/tests/conftest.py``) routes ``test/gemini`` and ``test/claude`` to
one Vertex vendor with a service-account key the fake trusts.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from openai import OpenAI

from fakevendors.openai import words
from lib import tokens
from routing.tests.sse_client import RawStream, content_of
from routing.tests.vendor_cast import CLOSE_BOUND, sse_chunks, tool_calls_of
from routing.tests.vertex_helpers import MESSAGES, PROMPT, UPSTREAM, WEATHER_TOOL


@pytest.fixture(params=["gemini", "claude"])
def dialect(request):
    return request.param


@pytest.fixture
def cast(vertex_casts, dialect):
    """The dialect's model on the fake Vertex (in this module, instead of the root conftest's OpenAI cast)."""
    return vertex_casts[dialect]


def test_streamed_answer_is_openai_chunks_billed_from_vendor_usage(cast, dialect, fake_vertex, service_account):
    client = OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)
    stream = client.chat.completions.create(
        model=cast.model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(words(5))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT[dialect], 5)
    record = cast.record(chunks[0].id)
    assert (record.status, record.usage_source) == ("completed", "vendor")
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT[dialect], 5)
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (PROMPT[dialect], 5)
    assert record.cost == Decimal(PROMPT[dialect] * 1 + 5 * 2) / 1_000_000
    upstream = fake_vertex.api_requests[-1]
    publisher, method = (
        ("google", "streamGenerateContent") if dialect == "gemini" else ("anthropic", "streamRawPredict")
    )
    model = UPSTREAM[dialect].removeprefix("anthropic/")
    assert (
        upstream.path
        == f"/v1/projects/test-project/locations/us-central1/publishers/{publisher}/models/{model}:{method}"
    )
    assert upstream.headers["authorization"].startswith("Bearer ya29.fake-")
    body = upstream.json()
    if dialect == "gemini":
        assert upstream.query == {"alt": ["sse"]}
        assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Tell me a long story."}]}]
    else:
        assert body["system"] == [{"type": "text", "text": "Be brief."}]
        assert (body["anthropic_version"], body["stream"], body["max_tokens"]) == ("vertex-2023-10-16", True, 4096)
    assert service_account["private_key"] not in record.error_message


def test_non_streamed_answer(cast, dialect, fake_vertex):
    response = cast.chat(messages=MESSAGES, max_tokens=3, temperature=0.2)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == cast.model
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "".join(words(3))}
    assert answer["choices"][0]["finish_reason"] == "length"
    assert (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]) == (PROMPT[dialect], 3)
    body = fake_vertex.api_requests[-1].json()
    if dialect == "gemini":
        assert fake_vertex.api_requests[-1].path.endswith(":generateContent")
        assert body["generationConfig"] == {"maxOutputTokens": 3, "temperature": 0.2}
    else:
        assert fake_vertex.api_requests[-1].path.endswith(":rawPredict")
        assert (body["max_tokens"], body["temperature"], "stream" in body) == (3, 0.2, False)
    record = cast.record(answer["id"])
    assert (record.status, record.streamed, record.finish_reason) == ("completed", False, "length")
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT[dialect], 3)


def test_tool_call_round_trip(cast, dialect, fake_vertex):
    fake_vertex.scenario.tool_call = True
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    response = cast.chat(messages=ask, tools=[WEATHER_TOOL], tool_choice="auto", stream=True)
    chunks = sse_chunks(response.text)
    calls = tool_calls_of(chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    first = calls[0]
    assert first["type"] == "function" and first["function"]["name"] == "get_weather" and first["index"] == 0
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    if dialect == "gemini":
        assert len(calls) == 1 and first["id"].startswith("call_")  # Gemini sends the call whole
        assert fake_vertex.api_requests[-1].json()["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    else:
        assert first["id"] == "toolu_vrtx_fake1" and len(calls) == 3
    call = {"id": first["id"], "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    follow_up = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": first["id"], "content": '{"temperature": 21}'},
    ]
    response = cast.chat(messages=follow_up, tools=[WEATHER_TOOL])
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "".join(words(5))
    body = fake_vertex.api_requests[-1].json()
    if dialect == "gemini":
        assert body["contents"][1] == {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        }
        assert body["contents"][2] == {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}}],
        }
    else:
        assert body["messages"][1]["content"] == [
            {"type": "tool_use", "id": first["id"], "name": "get_weather", "input": {"city": "Paris"}}
        ]
        assert body["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": first["id"], "content": '{"temperature": 21}'}
        ]


def test_cancel_mid_stream_closes_vendor_and_bills_delivered_tokens(cast, dialect, fake_vertex):
    fake_vertex.scenario.tokens = 50
    fake_vertex.scenario.token_delay = 0.1
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    received = ""
    while received.count(" ") < 7:
        received += content_of(stream.next_data())
    closed = stream.close()
    request = fake_vertex.api_requests[-1]
    seen = fake_vertex.wait_closed(request)
    assert seen is not None, "the vendor never saw the client's close"
    assert seen - closed < CLOSE_BOUND
    assert request.tokens_written < 50
    record = cast.record(stream.headers["x-generation-id"])
    assert record.status == "cancelled"
    assert record.completion_tokens == 7 == tokens.count_text(received, "cl100k_base") == record.tokens_delivered
    # The prompt figure the vendor had already reported, not a local count.
    assert record.prompt_tokens == record.vendor_prompt_tokens == PROMPT[dialect]
    assert PROMPT[dialect] != tokens.count_messages(MESSAGES, "cl100k_base")
    assert record.usage_source == "mixed"
    if dialect == "claude":
        assert record.vendor_completion_tokens is None  # message_start's output_tokens is a placeholder
    else:
        assert record.vendor_completion_tokens >= 7  # candidatesTokenCount of the last chunk read


def test_reasoning_is_relayed_and_counted_as_output(cast, dialect, fake_vertex):
    fake_vertex.scenario.thoughts = 3
    chunks = sse_chunks(cast.chat(stream=True).text)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "".join(words(3))
    assert "".join(content_of(c) for c in chunks) == "".join(words(5))
    record = cast.record(chunks[0]["id"])
    assert record.completion_tokens == 8
    if dialect == "gemini":
        assert record.reasoning_tokens == 3  # thoughtsTokenCount; Anthropic reports no split

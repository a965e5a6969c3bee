"""Vertex AI translations, OpenAI <-> Gemini and OpenAI <-> Anthropic, without a network."""

from __future__ import annotations

import orjson
import pytest

from routing.dialects.chat.schema import parse_chat_request
from routing.errors import RouterError, UpstreamError
from routing.vendors.base import ChunkEvent, UpstreamCall, Usage, UsageEvent
from routing.vendors.vertex import claude, gemini
from routing.vendors.vertex.adapter import VertexAdapter, publisher_and_model

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def call_of(upstream: str = "gemini-2.5-flash", max_output_tokens: int = 4096, **body) -> UpstreamCall:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    request = parse_chat_request(orjson.dumps(body))
    return UpstreamCall(request, upstream, "gen-1", max_output_tokens)


def usage_of(events) -> list[Usage]:
    return [e.usage for e in events if isinstance(e, UsageEvent)]


def deltas_of(events) -> list[dict]:
    return [e.choices[0] for e in events if isinstance(e, ChunkEvent)]


# -- which dialect ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("gemini-2.5-pro", ("google", "gemini-2.5-pro")),
        ("google/gemini-2.0-flash-001", ("google", "gemini-2.0-flash-001")),
        ("claude-3-5-sonnet@20240620", ("anthropic", "claude-3-5-sonnet@20240620")),
        ("anthropic/claude-sonnet-4@20250514", ("anthropic", "claude-sonnet-4@20250514")),
    ],
)
def test_upstream_model_id_picks_the_publisher(upstream, expected):
    assert publisher_and_model(upstream) == expected


def test_base_url_follows_the_location():
    def config(location, base_url=""):
        from routing.vendors.base import VendorConfig

        return VendorConfig(1, "v", "vertex", base_url, {"project": "p", "location": location},
                            {"access_token": "t"}, 1, 1, 1)  # fmt: skip

    assert VertexAdapter(config("us-central1")).base_url() == "https://us-central1-aiplatform.googleapis.com"
    assert VertexAdapter(config("global")).base_url() == "https://aiplatform.googleapis.com"
    assert VertexAdapter(config("global", "http://127.0.0.1:9/")).base_url() == "http://127.0.0.1:9"


# -- OpenAI -> Gemini --------------------------------------------------------------------------


def test_gemini_body_merges_roles_and_lifts_system_messages():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    body = gemini.body(call_of(messages=messages), stream=True)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
        {"role": "model", "parts": [{"text": "Checking."}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}},
            {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
        ]},
    ]  # fmt: skip


def test_gemini_generation_config_and_tools():
    call = call_of(
        max_completion_tokens=100, temperature=0.3, top_p=0.9, stop="END", seed=7,
        response_format={"type": "json_object"}, tools=[TOOL], tool_choice="required",
    )  # fmt: skip
    body = gemini.body(call, stream=False)
    assert body["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.3, "topP": 0.9, "seed": 7, "stopSequences": ["END"],
        "responseMimeType": "application/json",
    }  # fmt: skip
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "get_weather", "parameters": TOOL["function"]["parameters"]}]}
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_gemini_tool_choice(choice, config):
    assert gemini.body(call_of(tools=[TOOL], tool_choice=choice), True)["toolConfig"] == {
        "functionCallingConfig": config
    }


def test_tool_result_without_a_matching_call_is_a_400():
    messages = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "y"}]
    with pytest.raises(RouterError) as caught:
        gemini.body(call_of(messages=messages), True)
    assert (caught.value.status, caught.value.param) == (400, "messages[1].tool_call_id")


def test_unsupported_content_part_is_a_400():
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]
    with pytest.raises(RouterError) as caught:
        gemini.body(call_of(messages=messages), True)
    assert (caught.value.status, caught.value.param) == (400, "messages[0].content[0]")


# -- Gemini -> OpenAI --------------------------------------------------------------------------


def chunk(parts=None, finish=None, **usage) -> dict:
    candidate = {"content": {"role": "model", "parts": parts or []}}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 10, **usage}}


def test_gemini_stream_text_thoughts_and_usage():
    state = gemini.StreamState("v")
    first = state.events(chunk([{"text": "hmm", "thought": True}], thoughtsTokenCount=1))
    second = state.events(chunk([{"text": "Hi"}], candidatesTokenCount=1, thoughtsTokenCount=1))
    last = state.events(chunk([{"text": " there"}], "STOP", candidatesTokenCount=2, thoughtsTokenCount=1,
                              cachedContentTokenCount=4))  # fmt: skip
    assert [c["delta"] for c in deltas_of(first + second + last)] == [
        {"role": "assistant", "reasoning_content": "hmm"}, {"content": "Hi"}, {"content": " there"}, {}
    ]  # fmt: skip
    assert deltas_of(last)[-1]["finish_reason"] == "stop"
    # Every chunk carries usage; the last figures stand (the relay merges, never sums).
    assert usage_of(first)[0] == Usage(10, 1, 0, 1)
    assert usage_of(last)[0] == Usage(prompt_tokens=10, completion_tokens=3, cached_tokens=4, reasoning_tokens=1)


def test_gemini_function_call_is_one_whole_tool_call_delta():
    state = gemini.StreamState("v")
    events = state.events(chunk([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                                 {"functionCall": {"name": "get_time", "args": {}}}], "STOP"))  # fmt: skip
    first, finish = deltas_of(events)
    calls = first["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert finish["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
     ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop")],
)  # fmt: skip
def test_gemini_finish_reasons(reason, finish):
    assert gemini.finish_reason(reason, called_functions=False) == finish


def test_gemini_blocked_prompt_and_in_stream_error():
    with pytest.raises(UpstreamError) as blocked:
        gemini.StreamState("v").events({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}})
    assert (blocked.value.status, blocked.value.code) == (400, "content_filter")
    with pytest.raises(UpstreamError) as failed:
        gemini.StreamState("v").events({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
    error = failed.value
    assert (error.status, error.code, error.retryable) == (429, "upstream_rate_limited", True)
    assert (error.vendor_code, "slow down" in error.detail, "slow down" in error.message) == (
        "RESOURCE_EXHAUSTED", True, False
    )  # fmt: skip


def test_gemini_whole_answer():
    payload = chunk([{"text": "ok", "thought": True}, {"text": "Hi"}], "MAX_TOKENS", candidatesTokenCount=1,
                    thoughtsTokenCount=1)  # fmt: skip
    result = gemini.completion("v", payload)
    assert result.choices == [{"index": 0, "message": {"role": "assistant", "content": "Hi", "reasoning_content": "ok"},
                               "finish_reason": "length"}]  # fmt: skip
    assert result.usage == Usage(10, 2, 0, 1)


# -- OpenAI -> Anthropic -----------------------------------------------------------------------


def test_claude_body_has_no_model_and_a_max_tokens():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
        {"role": "user", "content": "Thanks"},
    ]
    body = claude.body(call_of("claude-sonnet-4@20250514", 2048, messages=messages, stop=["x"], tools=[TOOL]), True)
    assert "model" not in body
    assert (body["anthropic_version"], body["stream"], body["max_tokens"]) == ("vertex-2023-10-16", True, 2048)
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["stop_sequences"] == ["x"]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "21C"},
                                     {"type": "text", "text": "Thanks"}]},
    ]  # fmt: skip
    assert body["tools"] == [{"name": "get_weather", "input_schema": TOOL["function"]["parameters"]}]
    assert claude.body(call_of("claude-x", max_tokens=5), False)["max_tokens"] == 5
    assert "stream" not in claude.body(call_of("claude-x"), False)


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_claude_tool_choice(choice, parallel, expected):
    params = {"tools": [TOOL], "tool_choice": choice, "parallel_tool_calls": parallel}
    body = claude.body(call_of("claude-x", **{k: v for k, v in params.items() if v is not None}), True)
    assert body["tool_choice"] == expected


# -- Anthropic -> OpenAI -----------------------------------------------------------------------


def test_claude_events_become_chunks_and_usage():
    state = claude.StreamState("v")
    events = []
    for payload in [
        {"type": "message_start", "message": {"usage": {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 1}}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me check."}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]:  # fmt: skip
        events += state.events(payload)
    assert state.done
    # message_start's output_tokens (1) is a placeholder: not taken.
    assert usage_of(events) == [Usage(15, None, 3, 0), Usage(None, 30, 0, 0)]
    assert [c["delta"] for c in deltas_of(events)] == [
        {"role": "assistant", "reasoning_content": "hmm"},
        {"content": "Let me check."},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {},
    ]  # fmt: skip
    assert deltas_of(events)[-1]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter")],
)  # fmt: skip
def test_claude_stop_reasons(stop, finish):
    events = claude.StreamState("v").events(
        {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 2}}
    )
    assert deltas_of(events)[0]["finish_reason"] == finish


@pytest.mark.parametrize(
    ("kind", "status", "code", "retryable"),
    [("overloaded_error", 502, "upstream_error", True), ("rate_limit_error", 429, "upstream_rate_limited", True),
     ("api_error", 502, "upstream_error", True), ("invalid_request_error", 400, "upstream_invalid_request", False)],
)  # fmt: skip
def test_claude_error_event(kind, status, code, retryable):
    with pytest.raises(UpstreamError) as caught:
        claude.StreamState("v").events({"type": "error", "error": {"type": kind, "message": "boom"}})
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (status, code, retryable)
    assert (caught.value.vendor_code, "boom" in caught.value.detail, "boom" in caught.value.message) == (
        kind, True, False
    )  # fmt: skip


def test_claude_whole_answer():
    payload = {"type": "message", "content": [{"type": "text", "text": "Sure."},
               {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 4}}  # fmt: skip
    result = claude.completion("v", payload)
    message = result.choices[0]["message"]
    assert message["content"] == "Sure."
    assert message["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert result.choices[0]["finish_reason"] == "tool_calls"
    assert result.usage == Usage(9, 4, 0, 0)


@pytest.mark.parametrize(
    "model, required",
    [
        ("gemini-3-pro-preview", True),
        ("gemini-3.1-flash-lite", True),
        ("gemini-4-ultra", True),
        ("gemini-2.5-flash", False),
        ("gemini-1.5-pro-002", False),
    ],
)
def test_unsigned_calls_get_the_skip_value_from_gemini_3_on(model, required):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21"},
    ]
    request = parse_chat_request(orjson.dumps({"model": "m", "messages": messages}))
    (part,) = gemini.body(UpstreamCall(request, model, "gen-1"), stream=False)["contents"][1]["parts"]
    assert gemini.signatures_required(model) is required
    assert part.get("thoughtSignature") == (gemini.SKIP_SIGNATURE if required else None)

"""The Bedrock adapter end to end: the live router, a fake Bedrock on loopback speaking event-stream frames.

The fake checks every request's SigV4 signature (or bearer key) and answers 403 when it is
wrong, so every 200 here also proves the router signed exactly what it sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from billing.models import UsageRecord
from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.bedrock import ACCESS_KEY_ID, API_KEY, PROMPT_TOKENS, REGION, SECRET_ACCESS_KEY, FakeBedrock
from fakevendors.openai import words
from lib import tokens
from routing.errors import UPSTREAM_MESSAGES
from routing.services import model_create, vendor_create
from routing.tests.sse_client import RawStream, content_of

MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
SIGV4 = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
MESSAGES = [{"role": "user", "content": "Tell me a long story about a cat."}]
CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture
def bedrock(live_router, transactional_db) -> Iterator[Any]:
    """Return ``make(credentials=..., upstream=..., **fake)``: a fake Bedrock and a cast that routes to it."""
    fakes: list[FakeBedrock] = []

    def make(credentials: dict[str, str] | None = None, upstream: str = MODEL_ID, **fake_options: Any):
        fake = FakeBedrock(**fake_options)
        fake.start()
        fakes.append(fake)
        vendor = vendor_create("aws", "bedrock", fake.url, {"region": REGION}, credentials or SIGV4)
        model_create(
            "test/bedrock",
            deployments=[(vendor, upstream, 0, 1)],
            input_price=Decimal("1"),
            output_price=Decimal("2"),
        )
        api_key, plaintext = api_key_create("tester")
        return Cast(live_router.url, plaintext, api_key, "test/bedrock"), fake

    yield make
    wait_settled()
    for fake in fakes:
        fake.stop()


def sse_chunks(response: httpx.Response) -> list[Any]:
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def tool_calls_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [call for c in chunks for choice in c["choices"] for call in (choice["delta"].get("tool_calls") or [])]


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
    chunks = sse_chunks(response)
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
    assert "".join(content_of(c) for c in sse_chunks(response)) == "".join(words(9))


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
    chunks = sse_chunks(response)
    assert "".join(content_of(c) for c in chunks) == "".join(words(3))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_tool_call_round_trip(bedrock):
    cast, fake = bedrock(tokens=3, tool_call=True)
    question = {"role": "user", "content": "Weather in the cat sat?"}
    response = cast.chat(stream=True, messages=[question], tools=TOOLS, tool_choice="required")
    assert response.status_code == 200, response.text
    chunks = sse_chunks(response)
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
    chunks = sse_chunks(cast.chat(stream=True))
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "".join(words(3))
    assert "".join(content_of(c) for c in chunks) == "".join(words(2))


def test_throttling_before_the_stream_is_429_with_retry_after(bedrock):
    cast, _ = bedrock(status=429, error_type="ThrottlingException", retry_after="3")
    response = cast.chat(stream=True)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    error = response.json()["error"]
    assert error["code"] == "upstream_rate_limited" and error["type"] == "rate_limit_error"
    assert error["message"] == UPSTREAM_MESSAGES["upstream_rate_limited"]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", 429, Decimal(0))
    assert "Too many requests" in record.error_message  # the vendor's words are the operator's
    assert record.attempts[0]["vendor_code"] == "throttlingException"


def test_validation_error_before_the_stream_is_400(bedrock):
    cast, _ = bedrock(status=400, error_type="ValidationException", error_message="temperature: bad value")
    response = cast.chat(stream=True)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_invalid_request"
    assert "temperature: bad value" not in response.text
    assert "temperature: bad value" in cast.record(response.headers["x-generation-id"]).error_message


@pytest.mark.parametrize(
    ("exception_type", "status", "code"),
    [("throttlingException", 429, "upstream_rate_limited"), ("validationException", 400, "upstream_invalid_request"),
     ("serviceUnavailableException", 502, "upstream_error")],
)  # fmt: skip
def test_exception_event_before_the_first_token_sets_the_status(bedrock, exception_type, status, code):
    cast, _ = bedrock(exception_after=0, exception_type=exception_type, exception_message="no luck")
    response = cast.chat(stream=True)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "no luck" not in response.text
    record = cast.record(response.headers["x-generation-id"])
    assert "no luck" in record.error_message and record.attempts[0]["vendor_code"] == exception_type


def test_mid_stream_exception_event_becomes_the_error_chunk(bedrock):
    cast, _ = bedrock(tokens=8, exception_after=3)
    response = cast.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response)
    assert "".join(content_of(c) for c in chunks) == "".join(words(3))
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == "upstream_error"
    assert last["error"]["message"] == UPSTREAM_MESSAGES["upstream_error"]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.error_code, record.completion_tokens) == ("error", "upstream_error", 3)
    assert "The model stream failed." in record.error_message
    assert record.attempts[0]["vendor_code"] == "modelStreamErrorException"


def test_frame_with_a_bad_crc_is_an_upstream_error(bedrock):
    cast, fake = bedrock(tokens=8, bad_crc_after=2)
    response = cast.chat(stream=True)
    chunks = sse_chunks(response)
    assert "".join(content_of(c) for c in chunks) == "".join(words(2))
    assert chunks[-1]["error"]["code"] == "upstream_malformed"
    assert chunks[-1]["error"]["message"] == UPSTREAM_MESSAGES["upstream_malformed"]
    # The router is fine afterwards.
    fake.scenario.bad_crc_after = None
    assert "".join(content_of(c) for c in sse_chunks(cast.chat(stream=True))) == "".join(words(8))


def test_stream_cut_before_message_stop_is_an_error(bedrock):
    cast, _ = bedrock(tokens=8, truncate_after=4)
    response = cast.chat(stream=True)
    chunks = sse_chunks(response)
    assert chunks[-1]["error"]["code"] == "upstream_malformed"
    assert "ended before messageStop" in cast.record(response.headers["x-generation-id"]).error_message


def test_arn_model_id_is_one_signed_path_segment(bedrock):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"
    cast, fake = bedrock(upstream=arn, tokens=2)
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    request = fake.last()
    assert request.path == f"/model/{quote(arn, safe='')}/converse-stream"
    assert request.path.count("/") == 3
    assert fake.model_ids == [arn] and fake.auth_failures == []
    assert cast.chat().status_code == 200  # Converse too
    assert fake.model_ids == [arn, arn] and fake.auth_failures == []


def test_session_token_is_signed(bedrock):
    cast, fake = bedrock(
        credentials={**SIGV4, "aws_session_token": "FwoGZXIvYXdzEFAKE//token=="},
        session_token="FwoGZXIvYXdzEFAKE//token==",
    )
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    assert fake.last().headers["x-amz-security-token"] == "FwoGZXIvYXdzEFAKE//token=="
    assert "x-amz-security-token" in fake.last().headers["authorization"]
    assert fake.auth_failures == []


def test_missing_session_token_is_rejected_by_the_vendor(bedrock):
    cast, fake = bedrock(session_token="FwoGZXIvYXdzEFAKE//token==")
    response = cast.chat(stream=True)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert fake.auth_failures == ["session token missing or wrong"]


def test_wrong_secret_is_a_clear_502_without_the_secret(bedrock):
    wrong = "wrong/secret+key000000000000000000000000"
    cast, fake = bedrock(credentials={**SIGV4, "aws_secret_access_key": wrong})
    response = cast.chat(stream=True)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "vendor_auth_failed"
    assert "rejected the router's credentials" in error["message"]
    assert wrong not in response.text and ACCESS_KEY_ID not in response.text
    assert fake.auth_failures == ["signature mismatch"]
    record = cast.record(response.headers["x-generation-id"])
    assert wrong not in record.error_message


def test_api_key_is_sent_as_bearer(bedrock):
    cast, fake = bedrock(credentials={"api_key": API_KEY}, api_key=API_KEY, tokens=3)
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    assert "".join(content_of(c) for c in sse_chunks(response)) == "".join(words(3))
    request = fake.last()
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-amz-date" not in request.headers
    assert cast.chat().status_code == 200


def test_wrong_api_key_is_rejected(bedrock):
    cast, fake = bedrock(credentials={"api_key": "ABSK-not-the-key"}, api_key=API_KEY)
    response = cast.chat()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert "ABSK-not-the-key" not in response.text
    assert fake.auth_failures == ["bad API key"]


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


def test_cancel_mid_stream_closes_vendor_and_bills_delivered_tokens(bedrock):
    cast, fake = bedrock(tokens=50, token_delay=0.25)
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    received = ""
    while received.count(" ") < 7:
        received += content_of(stream.next_data())
    closed = stream.close()
    request = fake.last()
    seen = fake.wait_closed(request)
    assert seen is not None, "the vendor never saw the client's close"
    assert seen - closed < CLOSE_BOUND
    assert request.tokens_written < 50
    record = cast.record(stream.headers["x-generation-id"])
    assert record.status == "cancelled"
    assert record.completion_tokens == 7 == tokens.count_text(received, "cl100k_base") == record.tokens_delivered
    # Bedrock reports usage only in its last event: the prompt was counted by the router.
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (None, None)
    assert record.usage_source == "router"
    assert record.cost == Decimal(record.prompt_tokens * 1 + 7 * 2) / 1_000_000


def test_cancel_before_first_token_closes_vendor(bedrock):
    cast, fake = bedrock(first_token_delay=5.0)
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    request = fake.last()
    time.sleep(0.2)
    closed = stream.close()
    seen = fake.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    assert request.tokens_written == 0
    record = cast.record(generation_of(cast))
    assert (record.status, record.completion_tokens, record.cost) == (
        "cancelled",
        0,
        Decimal(record.prompt_tokens) / 1_000_000,
    )
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")


def generation_of(cast: Cast) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(api_key=cast.api_key).order_by("-id").first()
        if record is not None:
            return record.generation_id
        time.sleep(0.01)
    raise AssertionError("no usage record")

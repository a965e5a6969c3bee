"""Bedrock's wire pieces on their own: request translation, event-stream decoding, signing, configuration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from botocore.credentials import Credentials
from django.core.management import call_command

from fakevendors.bedrock import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    corrupt,
    event,
    exception,
    frame,
    sigv4_problem,
)
from fakevendors.server import RecordedRequest
from routing.dialects.chat.schema import parse_chat_request
from routing.errors import UPSTREAM_MESSAGES, RouterError, UpstreamError
from routing.models import Vendor
from routing.vendors.base import ChunkEvent, UpstreamCall, Usage, UsageEvent, VendorConfig
from routing.vendors.bedrock import BedrockAdapter
from routing.vendors.bedrock.converse import converse_choices, converse_request, usage_from_converse
from routing.vendors.bedrock.events import ConverseStreamDecoder


def chat(**body: Any):
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_chat_request(orjson.dumps(body))


def config(credentials: dict[str, str] | None = None, base_url: str = "") -> VendorConfig:
    secrets = credentials or {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
    return VendorConfig(7, "aws", "bedrock", base_url, {"region": REGION}, secrets, 5.0, 30.0, 30.0)


def decode(data: bytes, piece: int = 1) -> list[Any]:
    decoder = ConverseStreamDecoder("aws")
    events: list[Any] = []
    for i in range(0, len(data), piece):
        events.extend(decoder.feed(data[i : i + piece]))
    decoder.finish()
    return events


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e.choices[0]["delta"] for e in events if isinstance(e, ChunkEvent)]


# -- OpenAI -> Converse ---------------------------------------------------------------------------


def test_system_and_developer_messages_become_system_blocks():
    request = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "hi"},
        ]
    )
    body = converse_request(request)
    assert body["system"] == [{"text": "Be brief."}, {"text": "Use metric units."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert "inferenceConfig" not in body and "toolConfig" not in body


def test_consecutive_same_role_messages_are_merged():
    request = chat(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"},
        ]
    )
    assert converse_request(request)["messages"] == [
        {"role": "user", "content": [{"text": "one"}, {"text": "two"}]},
        {"role": "assistant", "content": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "content": [{"text": "five"}]},
    ]


def test_inference_parameters_map_to_inference_config():
    body = converse_request(chat(max_completion_tokens=64, temperature=0.2, top_p=0.9, stop=["a", "b"], seed=3))
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["a", "b"]}


def test_tool_calls_and_results_map_to_tool_use_and_tool_result():
    request = chat(
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "wx", "arguments": '{"city": "Oslo"}'}},
                    {"id": "t2", "type": "function", "function": {"name": "wx", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "cold"},
            {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "warm"}]},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[{"type": "function", "function": {"name": "wx"}}],
        tool_choice="none",
    )
    body = converse_request(request)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "t1", "name": "wx", "input": {"city": "Oslo"}}},
            {"toolUse": {"toolUseId": "t2", "name": "wx", "input": {}}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "t1", "content": [{"text": "cold"}]}},
            {"toolResult": {"toolUseId": "t2", "content": [{"text": "warm"}]}},
            {"text": "Thanks"},
        ],
    }
    # 'none' with tool blocks in the history: Converse still needs the tool specs, without a choice.
    assert body["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "wx", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "wx"}}, {"tool": {"name": "wx"}}),
    ],
)
def test_tool_choice_maps_to_converse(choice, expected):
    body = converse_request(chat(tools=[{"type": "function", "function": {"name": "wx"}}], tool_choice=choice))
    assert body["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_without_tool_history_sends_no_tools():
    body = converse_request(chat(tools=[{"type": "function", "function": {"name": "wx"}}], tool_choice="none"))
    assert "toolConfig" not in body


def test_image_data_url_becomes_an_image_block():
    content = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAAA"}}]
    body = converse_request(chat(messages=[{"role": "user", "content": content}]))
    assert body["messages"][0]["content"] == [{"image": {"format": "jpeg", "source": {"bytes": "/9j/AAAA"}}}]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}],
            "messages[0].content[0]",
        ),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "messages[0].content[0]"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}]}],
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_untranslatable_messages_are_a_400_naming_the_field(messages, param):
    with pytest.raises(RouterError) as caught:
        converse_request(chat(messages=messages))
    assert (caught.value.status, caught.value.param) == (400, param)


# -- Converse -> OpenAI ---------------------------------------------------------------------------


def test_converse_answer_becomes_openai_choices():
    payload = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "t1", "name": "wx", "input": {"city": "Oslo"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14},
    }
    assert converse_choices(payload) == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "wx", "arguments": '{"city":"Oslo"}'}}
                ],
                "reasoning_content": "hmm",
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish):
    events = decode(event("messageStop", {"stopReason": stop_reason}))
    assert events[0].choices[0]["finish_reason"] == finish


def test_usage_counts_cache_reads_and_writes_as_prompt():
    usage = usage_from_converse(
        {"inputTokens": 10, "outputTokens": 3, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7}, "aws"
    )
    assert usage == Usage(prompt_tokens=117, completion_tokens=3, cached_tokens=100)


# -- the event stream -----------------------------------------------------------------------------


def test_decoder_maps_events_to_chunks_whatever_the_byte_boundaries():
    stream = (
        event("messageStart", {"role": "assistant"})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}})
        + event("contentBlockStop", {"contentBlockIndex": 0})
        + event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hello"}})
        + event("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t9", "name": "wx"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"ci'}}})
        + event("contentBlockStart", {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "t10", "name": "tz"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": 'ty": "Oslo"}'}}})
        + event("messageStop", {"stopReason": "tool_use"})
        + event("metadata", {"usage": {"inputTokens": 12, "outputTokens": 9, "cacheReadInputTokens": 2}})
    )
    for piece in (1, 5, len(stream)):
        events = decode(stream, piece)
        assert deltas(events) == [
            {"role": "assistant", "reasoning_content": "think"},
            {"content": "Hello"},
            {"tool_calls": [{"index": 0, "id": "t9", "type": "function", "function": {"name": "wx", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]},
            {
                "tool_calls": [
                    {"index": 1, "id": "t10", "type": "function", "function": {"name": "tz", "arguments": ""}}
                ]
            },
            {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]},
            {},
        ]
        assert events[-2].choices[0]["finish_reason"] == "tool_calls"
        assert events[-1] == UsageEvent(Usage(prompt_tokens=14, completion_tokens=9, cached_tokens=2))


def test_frame_layout_matches_the_documented_format():
    data = frame({":message-type": "event"}, b"{}")
    assert int.from_bytes(data[0:4], "big") == len(data)
    assert int.from_bytes(data[4:8], "big") == 1 + 13 + 1 + 2 + 5
    assert data[-6:-4] == b"{}"


def test_bad_crc_raises_a_clear_upstream_error():
    data = event("messageStart", {"role": "assistant"}) + corrupt(
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})
    )
    with pytest.raises(UpstreamError) as caught:
        decode(data)
    assert (caught.value.status, caught.value.code) == (502, "upstream_malformed")
    assert "ChecksumMismatch" in caught.value.detail
    assert caught.value.message == UPSTREAM_MESSAGES["upstream_malformed"]


def test_bad_prelude_crc_raises_before_reading_a_bogus_length():
    data = bytearray(event("messageStart", {"role": "assistant"}))
    data[2] ^= 0x40  # total length now claims megabytes
    with pytest.raises(UpstreamError) as caught:
        decode(bytes(data))
    assert "corrupt event-stream frame" in caught.value.detail


@pytest.mark.parametrize(
    ("exception_type", "status", "code", "retryable"),
    [
        ("throttlingException", 429, "upstream_rate_limited", True),
        ("validationException", 400, "upstream_invalid_request", False),
        ("serviceUnavailableException", 502, "upstream_error", True),
        ("internalServerException", 502, "upstream_error", True),
        ("modelStreamErrorException", 502, "upstream_error", False),
        ("somethingNewException", 502, "upstream_error", False),
    ],
)
def test_exception_events_map_to_statuses(exception_type, status, code, retryable):
    with pytest.raises(UpstreamError) as caught:
        decode(event("messageStart", {"role": "assistant"}) + exception(exception_type, "details here"))
    error = caught.value
    assert (error.status, error.code, error.vendor_code, error.retryable) == (status, code, exception_type, retryable)
    assert "details here" in error.detail and error.message == UPSTREAM_MESSAGES[code]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (event("messageStart", {"role": "assistant"}), "ended before messageStop"),
        (event("messageStop", {"stopReason": "end_turn"})[:-3], "ended inside a frame"),
    ],
)
def test_truncated_streams_are_errors(data, reason):
    with pytest.raises(UpstreamError) as caught:
        decode(data)
    assert reason in caught.value.detail


# -- signing and configuration --------------------------------------------------------------------


def test_signed_request_verifies_and_any_change_breaks_it():
    adapter = BedrockAdapter(config(base_url="http://127.0.0.1:9"))
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc:1"
    request = adapter.request(UpstreamCall(chat(), arn, "gen-1"), stream=True)
    assert (
        request.url.raw_path
        == b"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc%3A1/converse-stream"
    )
    received = RecordedRequest(
        "POST", request.url.path, {}, {k.lower(): v for k, v in request.headers.items()}, request.content,
        raw_target=request.url.raw_path.decode(),
    )  # fmt: skip
    credentials = Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    now = datetime.now(UTC)
    assert sigv4_problem(received, credentials, REGION, now) is None
    received.body = request.content.replace(b"hi", b"ho")
    assert sigv4_problem(received, credentials, REGION, now) == "signature mismatch"
    received.body = request.content
    received.raw_target = received.raw_target.replace("abc", "abd")
    assert sigv4_problem(received, credentials, REGION, now) == "signature mismatch"
    received.raw_target = request.url.raw_path.decode()
    assert sigv4_problem(received, Credentials(ACCESS_KEY_ID, "other"), REGION, now) == "signature mismatch"


@pytest.mark.parametrize(
    ("status", "error_type", "body", "client_status", "code", "vendor_code", "text"),
    [
        (424, "ModelErrorException", {"message": "model broke"}, 502, "upstream_error", "modelErrorException",
         "model broke"),
        (408, "ModelTimeoutException", {"message": "slow"}, 504, "upstream_timeout", "modelTimeoutException", "slow"),
        (503, "ServiceUnavailableException", {"Message": "busy"}, 502, "upstream_error",
         "serviceUnavailableException", "busy"),
        (500, "", {}, 502, "upstream_error", "upstream_500", "returned HTTP 500"),
        (403, "UnrecognizedClientException", {"Message": "The security token is invalid."}, 502,
         "vendor_auth_failed", None, "rejected the router's credentials (HTTP 403 UnrecognizedClientException)"),
    ],
)  # fmt: skip
def test_http_errors_map_by_status_and_error_type(status, error_type, body, client_status, code, vendor_code, text):
    headers = httpx.Headers(
        {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/"} if error_type else {}
    )
    error = BedrockAdapter(config()).on_error(status, orjson.dumps(body), headers)
    assert (error.status, error.code, error.vendor_code, error.vendor_status) == (
        client_status, code, vendor_code, status
    )  # fmt: skip
    assert text in error.detail and error.message == UPSTREAM_MESSAGES[code]


def test_default_base_url_is_the_regional_runtime_endpoint():
    adapter = BedrockAdapter(config())
    assert adapter.url("amazon.nova-lite-v1:0", stream=False) == (
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse"
    )


@pytest.mark.parametrize(
    ("options", "credentials", "message"),
    [
        ({}, {"api_key": "k"}, "--region is required"),
        ({"region": "moon"}, {"api_key": "k"}, "not an AWS region"),
        ({"region": "us-east-1"}, {}, "needs --aws-access-key-id and --aws-secret-access-key"),
        ({"region": "us-east-1"}, {"aws_access_key_id": "A"}, "needs --aws-access-key-id"),
        ({"region": "us-east-1"}, {"aws_session_token": "T"}, "needs --aws-access-key-id"),
        ({"region": "us-east-1"}, {"api_key": "k", "aws_access_key_id": "A"}, "not both"),
    ],
)
def test_validate_gives_one_line_errors(options, credentials, message):
    with pytest.raises(ValueError, match=message) as caught:
        BedrockAdapter.validate("", options, credentials)
    assert "\n" not in str(caught.value)


@pytest.mark.django_db
def test_vendor_add_command_stores_aws_credentials_encrypted():
    call_command(
        "vendor", "add", "aws", "--kind", "bedrock", "--region", "eu-central-1",
        "--aws-access-key-id", "AKIAEXAMPLE", "--aws-secret-access-key", "s3cr3t/KEY",
        "--aws-session-token", "T0KEN",
    )  # fmt: skip
    vendor = Vendor.objects.get(name="aws")
    assert (vendor.kind, vendor.options, vendor.base_url) == ("bedrock", {"region": "eu-central-1"}, "")
    assert vendor.credentials() == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "s3cr3t/KEY",
        "aws_session_token": "T0KEN",
    }
    assert "s3cr3t" not in vendor.credentials_encrypted and "T0KEN" not in vendor.credentials_encrypted
    call_command("vendor", "add", "aws-key", "--kind", "bedrock", "--region", "us-west-2", "--api-key", "ABSKkey")
    assert Vendor.objects.get(name="aws-key").credentials() == {"api_key": "ABSKkey"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aws-access-key-id", "A", "--aws-secret-access-key", "S"], "--region is required"),
        (["--region", "us-east-1"], "needs --aws-access-key-id"),
        (["--region", "us-east-1", "--aws-access-key-id", "A"], "needs --aws-access-key-id"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_vendor_add_bedrock_misconfigured_is_one_line(args, message):
    from routing.tests.test_commands import manage

    result = manage("vendor", "add", "aws", "--kind", "bedrock", *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_manage_help_lists_bedrock_options():
    from routing.tests.test_commands import manage

    result = manage("vendor", "add", "--help")
    for flag in ("--region", "--aws-access-key-id", "--aws-secret-access-key", "--aws-session-token"):
        assert flag in result.stdout

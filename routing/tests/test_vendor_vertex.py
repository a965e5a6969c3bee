"""Vertex AI end to end: the live router, the fake Vertex (Gemini and Claude) and its token endpoint."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import orjson
import pytest
from django.core.management import CommandError, call_command
from openai import OpenAI

from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.openai import words
from fakevendors.vertex.claude import CLAUDE_INPUT_TOKENS
from fakevendors.vertex.gemini import GEMINI_PROMPT_TOKENS
from fakevendors.vertex.oauth import service_account_key
from lib import tokens
from routing.errors import UPSTREAM_MESSAGES
from routing.models import Vendor
from routing.services import model_create, vendor_create
from routing.tests.sse_client import RawStream, content_of
from routing.tests.test_commands import manage
from routing.vendors.vertex.auth import REFRESH_MARGIN

CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close
UPSTREAM = {"gemini": "gemini-2.5-flash", "claude": "anthropic/claude-sonnet-4@20250514"}
PROMPT = {"gemini": GEMINI_PROMPT_TOKENS, "claude": CLAUDE_INPUT_TOKENS}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a long story."}]


@pytest.fixture
def casts(live_router, fake_vertex, service_account, transactional_db):
    """Models ``test/gemini`` and ``test/claude`` on one Vertex vendor, and a key for both."""
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    vendor = vendor_create("vertex", "vertex", fake_vertex.url, options, {"credentials_json": service_account})
    prices = {"input_price": Decimal("1"), "output_price": Decimal("2")}
    for dialect, upstream in UPSTREAM.items():
        model_create(f"test/{dialect}", deployments=[(vendor, upstream, 0, 1)], **prices)
    api_key, plaintext = api_key_create("tester")
    yield {dialect: Cast(live_router.url, plaintext, api_key, f"test/{dialect}") for dialect in UPSTREAM}
    wait_settled()


@pytest.fixture(params=["gemini", "claude"])
def dialect(request):
    return request.param


@pytest.fixture
def cast(casts, dialect):
    return casts[dialect]


def sse_chunks(text: str) -> list[dict]:
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def warm_up(cast: Cast) -> None:
    """Fetch the vendor's access token now, so that a later failure comes before any keepalive."""
    assert cast.chat(max_tokens=1).status_code == 200


def tool_calls_of(chunks: list[dict]) -> list[dict]:
    return [call for c in chunks for choice in c["choices"] for call in (choice["delta"].get("tool_calls") or [])]


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


@pytest.fixture
def gemini3(casts):
    """``test/gemini3``: a Gemini 3 model on the same Vertex vendor (thought signatures enforced)."""
    vendor = Vendor.objects.get(name="vertex")
    prices = {"input_price": Decimal("1"), "output_price": Decimal("2")}
    model_create("test/gemini3", deployments=[(vendor, "gemini-3-pro-preview", 0, 1)], **prices)
    gemini = casts["gemini"]
    return Cast(gemini.url, gemini.key, gemini.api_key, "test/gemini3")


def test_gemini3_thought_signature_survives_a_tool_round_trip_through_the_openai_sdk(gemini3, fake_vertex):
    fake_vertex.scenario.tool_call = True
    client = OpenAI(base_url=gemini3.url + "/v1", api_key=gemini3.key)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    message = client.chat.completions.create(model=gemini3.model, messages=ask, tools=[WEATHER_TOOL]).choices[0].message
    (call,) = message.tool_calls
    signature = call.model_extra["extra_content"]["google"]["thought_signature"]
    assert signature in fake_vertex.thought_signatures
    # The application sends the assistant message back as the SDK gave it, then the tool result.
    history = [*ask, message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "21"}]
    answer = client.chat.completions.create(model=gemini3.model, messages=history, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "".join(words(5))
    (part,) = fake_vertex.api_requests[-1].json()["contents"][1]["parts"]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": signature}


def test_gemini3_streamed_tool_call_carries_its_thought_signature(gemini3, fake_vertex):
    fake_vertex.scenario.tool_call = True
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    response = gemini3.chat(messages=ask, tools=[WEATHER_TOOL], stream=True)
    (call,) = tool_calls_of(sse_chunks(response.text))
    signature = call["extra_content"]["google"]["thought_signature"]
    assert signature in fake_vertex.thought_signatures
    call.pop("index")
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": call["id"], "content": "21"}]  # fmt: skip
    response = gemini3.chat(messages=history, tools=[WEATHER_TOOL], stream=True)
    assert "".join(content_of(chunk) for chunk in sse_chunks(response.text)) == "".join(words(5))
    assert fake_vertex.api_requests[-1].json()["contents"][1]["parts"][0]["thoughtSignature"] == signature


def test_gemini3_history_with_calls_no_gemini_signed_gets_googles_skip_value(gemini3, fake_vertex):
    """Calls another model made (before a fallback to Gemini, say) carry no signature: the first
    call of the turn gets Google's documented skip value instead of a 400."""
    calls = [
        {"id": f"call_{city}", "type": "function",
         "function": {"name": "get_weather", "arguments": orjson.dumps({"city": city}).decode()}}
        for city in ("Paris", "Oslo")
    ]  # fmt: skip
    history = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "21"} for c in calls),
    ]
    response = gemini3.chat(messages=history, tools=[WEATHER_TOOL])
    assert response.status_code == 200, response.text
    first, second = fake_vertex.api_requests[-1].json()["contents"][1]["parts"]
    assert first["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in second  # parallel calls: Gemini signs the first only


@pytest.mark.parametrize("stream", [True, False])
def test_vendor_error_before_first_token_keeps_status_and_code(cast, dialect, fake_vertex, stream):
    warm_up(cast)
    fake_vertex.scenario.status = 429 if dialect == "gemini" else 529
    response = cast.chat(stream=stream)
    expected_status, expected_code = (429, "upstream_rate_limited") if dialect == "gemini" else (502, "upstream_error")
    assert response.status_code == expected_status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == expected_code and error["message"] == UPSTREAM_MESSAGES[expected_code]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", expected_status, Decimal(0))
    assert "Vendor 'vertex' returned HTTP" in record.error_message
    vendor_code = "RESOURCE_EXHAUSTED" if dialect == "gemini" else "overloaded_error"
    assert record.attempts[0]["vendor_code"] == vendor_code


def test_mid_stream_error_ends_with_error_chunk(cast, dialect, fake_vertex):
    fake_vertex.scenario.error_after = 2
    response = cast.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(2))
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == "upstream_error"
    record = cast.record(response.headers["x-generation-id"])
    assert record.attempts[0]["vendor_code"] == ("UNAVAILABLE" if dialect == "gemini" else "overloaded_error")
    assert (record.status, record.completion_tokens) == ("error", 2)
    assert record.prompt_tokens == PROMPT[dialect]  # reported before the failure


def test_stream_cut_without_a_finish_is_an_error(cast, dialect, fake_vertex):
    fake_vertex.scenario.cut_after = 3
    response = cast.chat(stream=True)
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(3))
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert chunks[-1]["error"]["code"] == "upstream_truncated"
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 3)


def test_static_access_token_is_used_as_is(live_router, fake_vertex, transactional_db):
    fake_vertex.issued["ya29.static-operator-token"] = time.monotonic() + 3600
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    vendor = vendor_create("vertex", "vertex", fake_vertex.url, options, {"access_token": "ya29.static-operator-token"})
    model_create("test/gemini", deployments=[(vendor, "gemini-2.5-flash", 0, 1)])
    api_key, plaintext = api_key_create("tester")
    response = Cast(live_router.url, plaintext, api_key, "test/gemini").chat()
    wait_settled()
    assert response.status_code == 200
    assert fake_vertex.api_requests[-1].headers["authorization"] == "Bearer ya29.static-operator-token"
    assert fake_vertex.token_requests == []


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


def test_access_token_is_fetched_once_and_reused(casts, fake_vertex):
    for cast in [casts["gemini"], casts["claude"], casts["gemini"]]:
        assert cast.chat().status_code == 200
    assert len(fake_vertex.token_requests) == 1
    assert len({r.headers["authorization"] for r in fake_vertex.api_requests}) == 1


def test_access_token_is_refreshed_before_it_expires(casts, fake_vertex):
    lifetime = 4.0  # long enough for the first two requests on a busy machine
    fake_vertex.scenario.expires_in = int(REFRESH_MARGIN + lifetime)  # usable for 4 s under the router's margin
    assert casts["gemini"].chat().status_code == 200
    assert casts["claude"].chat().status_code == 200
    assert len(fake_vertex.token_requests) == 1
    # The router counts the token's life from just before it asked (before the fake received
    # the request; one monotonic clock), however long the first request took on a busy machine.
    asked = fake_vertex.token_requests[0].received_at
    time.sleep(max(0.0, asked + lifetime + 0.3 - time.monotonic()))
    assert casts["gemini"].chat().status_code == 200
    assert len(fake_vertex.token_requests) == 2
    bearers = [r.headers["authorization"] for r in fake_vertex.api_requests]
    assert bearers[0] == bearers[1] != bearers[2]


def test_token_endpoint_refusing_the_key_is_a_clear_502(casts, fake_vertex):
    fake_vertex.trust(service_account_key(fake_vertex.url + "/token"))  # a different key than the vendor's
    response = casts["gemini"].chat()  # not streamed: a keepalive could come before the refusal
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "vendor_auth_failed"
    assert "invalid_grant" not in response.text
    record = casts["gemini"].record(response.headers["x-generation-id"])
    assert "refused the service account" in record.error_message and "invalid_grant" in record.error_message
    assert fake_vertex.api_requests == []
    assert "PRIVATE KEY" not in response.text


@pytest.mark.parametrize("stream", [True, False])
def test_blocked_gemini_prompt_is_a_400_content_filter(casts, fake_vertex, stream):
    warm_up(casts["gemini"])
    fake_vertex.scenario.block_prompt = "PROHIBITED_CONTENT"
    response = casts["gemini"].chat(stream=stream)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter" and "PROHIBITED_CONTENT" in error["message"]
    record = casts["gemini"].record(response.headers["x-generation-id"])
    assert (record.status, record.error_code) == ("error", "content_filter")


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


# -- manage.py vendor add --kind vertex --------------------------------------------------------


@pytest.mark.django_db
def test_vendor_add_vertex_stores_the_key_encrypted(tmp_path, capsys):
    info = service_account_key("https://oauth2.googleapis.com/token")
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(info))
    call_command("vendor", "add", "gcp", "--kind", "vertex", "--project", "my-proj", "--location", "europe-west4",
                 "--credentials-file", str(key_file))  # fmt: skip
    vendor = Vendor.objects.get(name="gcp")
    assert vendor.options == {"project": "my-proj", "location": "europe-west4"}
    assert vendor.credentials() == {"credentials_json": info}
    assert info["private_key"][40:80] not in vendor.credentials_encrypted
    call_command("vendor", "list")
    out = capsys.readouterr()
    assert "gcp\tvertex" in out.out and "PRIVATE KEY" not in out.out + out.err


BAD_KEYS = {
    "user": {"type": "authorized_user", "client_id": "x", "client_secret": "y", "refresh_token": "z"},
    "broken": {"type": "service_account", "client_email": "a@b", "token_uri": "https://oauth2.googleapis.com/token",
               "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n"},
    "plain-http": {**service_account_key("http://tokens.example.com/token")},
}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (["--location", "us-central1"], "good", "--project is required"),
        (["--project", "p"], "good", "--location is required"),
        (["--project", "p", "--location", "us-central1"], "user", "not a service-account key"),
        (["--project", "p", "--location", "us-central1"], "broken", "not a readable PEM RSA key"),
        (["--project", "p", "--location", "us-central1"], "plain-http", "must be an https URL"),
        (["--project", "p", "--location", "us-central1"], None, "needs --credentials-file"),
        (["--project", "p/../x", "--location", "us-central1"], "good", "not a valid Google Cloud project"),
    ],
)
@pytest.mark.django_db
def test_vendor_add_vertex_rejects_bad_options(tmp_path, extra, key, message):
    args = ["vendor", "add", "gcp", "--kind", "vertex", *extra]
    if key:
        info = BAD_KEYS.get(key) or service_account_key("https://oauth2.googleapis.com/token")
        (tmp_path / "key.json").write_text(json.dumps(info))
        args += ["--credentials-file", str(tmp_path / "key.json")]
    with pytest.raises(CommandError) as caught:
        call_command(*args)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)
    assert not Vendor.objects.filter(name="gcp").exists()


@pytest.mark.django_db(transaction=True)
def test_vendor_add_vertex_with_a_user_credentials_file_fails_in_one_line(tmp_path):
    (tmp_path / "user.json").write_text(json.dumps(BAD_KEYS["user"]))
    result = manage("vendor", "add", "gcp", "--kind", "vertex", "--project", "p", "--location", "us-central1",
                    "--credentials-file", str(tmp_path / "user.json"))  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a service-account key (type is 'authorized_user'" in lines[0], result.stderr

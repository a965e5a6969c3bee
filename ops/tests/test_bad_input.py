"""Bad input gets a 4xx OpenAI-shaped error naming the problem; never a 5xx, never a crash.

Property-based over the request schema (in process and through a live router), then a
catalogue of malformed bodies and hostile headers sent over real sockets. After each
live test the router must still answer a good request.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import dechunk
from lib import tokens
from routing.canonical import ChatRequest
from routing.dialects.chat.schema import MAX_DEPTH, MAX_MESSAGES, PASSTHROUGH, ROUTER_FIELDS, parse_chat_request
from routing.errors import RouterError

# -- strategies --------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot", ""]) | json_values
contents = (
    st.text(max_size=40)
    | st.none()
    | json_values
    | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"])}, optional={"text": json_values}),
        max_size=3,
    )
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "function": json_values
            | st.fixed_dictionaries({}, optional={"name": json_values, "arguments": json_values}),
        },
    )
    | json_values,
    max_size=2,
)
messages = (
    st.fixed_dictionaries(
        {}, optional={"role": roles, "content": contents, "name": json_values, "tool_calls": tool_calls}
    )
    | json_values
)
fields = sorted(PASSTHROUGH | ROUTER_FIELDS)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=300) | json_values,
        "messages": st.lists(messages, max_size=4) | json_values,
        **{name: json_values for name in fields if name not in ("model", "messages")},
        "not_a_field": json_values,
    },
)


def assert_openai_error(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    assert len(response.content) < 2000  # the problem is named, not the input echoed back
    return error


# -- the schema, in process ---------------------------------------------------------------


@settings(max_examples=600)
@given(body=request_bodies)
@example(body={"model": "m", "messages": [{"role": ["user"], "content": "x"}]})
@example(body={"model": "m", "messages": [{"role": "assistant", "tool_calls": ["call"]}]})
@example(body={"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]})
@example(body={"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
@example(body={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": "x"}})
def test_schema_accepts_or_rejects_with_400_naming_the_field(body):
    try:
        request = parse_chat_request(json.dumps(body).encode())
    except RouterError as error:
        assert error.status == 400
        assert error.code and error.message
        assert error.param or error.code == "invalid_json"
        return
    assert isinstance(request, ChatRequest)
    # What the schema accepts, the rest of the router can handle: count, forward, bill.
    tokens.count_messages(request.messages, "cl100k_base", request.params.get("tools"))
    orjson.dumps(request.params)


@settings(max_examples=300)
@given(raw=st.binary(max_size=200))
def test_schema_rejects_arbitrary_bytes_with_400(raw):
    try:
        parse_chat_request(raw)
    except RouterError as error:
        assert error.status == 400


# -- through the live router --------------------------------------------------------------


def post(url: str, key: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})},
        timeout=60,
    )


def assert_still_serving(cast) -> None:
    response = cast.chat(messages=[{"role": "user", "content": "still there?"}])
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "You said: still there?"


@settings(max_examples=60)
@given(body=request_bodies)
def test_live_router_answers_generated_bodies_without_5xx(demo_cast, body):
    if isinstance(body.get("model"), str) and body.get("messages"):
        body["model"] = demo_cast.model  # reach the vendor when the rest is valid
    response = post(demo_cast.url, demo_cast.key, json.dumps(body).encode())
    assert response.status_code < 500, (body, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert_openai_error(response)


def _nested(depth: int) -> bytes:
    return (
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}"
    )


GOOD = {"model": "demo/instant", "messages": [{"role": "user", "content": "hi"}]}

MALFORMED: list[tuple[str, bytes, int, str | None, str | None]] = [
    # (case, body, status, code, param)
    ("empty body", b"", 400, "invalid_json", None),
    ("not json", b"{model: demo}", 400, "invalid_json", None),
    ("invalid utf-8", b'{"model":"demo/instant","messages":[{"role":"user","content":"\xff\xfe"}]}', 400, "invalid_json", None),
    ("json array", b"[1, 2]", 400, "invalid_json", None),
    ("nested past the limit", _nested(MAX_DEPTH + 5), 400, "invalid_json", None),
    ("nested past the parser", _nested(5000), 400, "invalid_json", None),
    ("1e400", orjson.dumps(GOOD)[:-1] + b',"temperature":1e400}', 400, "invalid_json", None),
    ("2**200 max_tokens", orjson.dumps(GOOD)[:-1] + b',"max_tokens":' + str(2**200).encode() + b"}", 400, "invalid_type", "max_tokens"),
    ("2**200 seed", orjson.dumps(GOOD)[:-1] + b',"seed":' + str(2**200).encode() + b"}", 400, "invalid_type", "seed"),
    ("huge temperature", orjson.dumps({**GOOD, "temperature": 1e300}), 400, "invalid_value", "temperature"),
    ("model is a number", orjson.dumps({**GOOD, "model": 7}), 400, "missing", "model"),
    ("messages is a string", orjson.dumps({**GOOD, "messages": "hi"}), 400, "invalid_type", "messages"),
    ("role is a list", orjson.dumps({**GOOD, "messages": [{"role": ["user"], "content": "x"}]}), 400, "invalid_value", "messages[0].role"),
    ("content is a number", orjson.dumps({**GOOD, "messages": [{"role": "user", "content": 5}]}), 400, "invalid_type", "messages[0].content"),
    ("tool call not an object", orjson.dumps({**GOOD, "messages": [{"role": "assistant", "tool_calls": [1]}]}), 400, "invalid_type", "messages[0].tool_calls[0]"),
    ("stream is a string", orjson.dumps({**GOOD, "stream": "yes"}), 400, "invalid_type", "stream"),
    ("unknown field", orjson.dumps({**GOOD, "frobnicate": True}), 400, "unknown_parameter", "frobnicate"),
    ("unknown field with a huge name", orjson.dumps({**GOOD, "x" * 100_000: 1}), 400, "unknown_parameter", "x" * 64 + "..."),
    ("model name of 1 MB", orjson.dumps({**GOOD, "model": "m" * 1_000_000}), 400, "invalid_value", "model"),
    ("10 MB message", orjson.dumps({**GOOD, "messages": [{"role": "user", "content": "a" * 10_000_000}]}), 413, "request_too_large", None),
    ("too many messages", orjson.dumps({**GOOD, "messages": [{"role": "user", "content": ""}] * (MAX_MESSAGES + 1)}), 400, "invalid_value", "messages"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "code", "param"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_body_gets_4xx_naming_the_problem(demo_cast, body, status, code, param):
    error = assert_openai_error(post(demo_cast.url, demo_cast.key, body), status)
    assert error["code"] == code
    assert error["param"] == param
    assert_still_serving(demo_cast)


def test_thousands_of_messages_are_served(demo_cast):
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(5000)]
    response = post(demo_cast.url, demo_cast.key, orjson.dumps({**GOOD, "messages": many}))
    assert response.status_code == 200, response.text[:300]
    record = demo_cast.record(response.json()["id"])
    assert record.status == "completed" and record.prompt_tokens > 5000


# -- hostile headers, over a raw socket -----------------------------------------------------


def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError("closed without an answer")
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        payload = dechunk(payload)
    return status, headers, payload


def chat_head(authorization: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Authorization: " + authorization + b"\r\n" + extra
    )


def test_crlf_in_authorization_cannot_inject_response_headers(demo_cast):
    body = orjson.dumps(GOOD)
    head = chat_head(b"Bearer sk-siraya-nope\r\nX-Injected: yes", body)
    status, headers, payload = raw_request(demo_cast.url, head, body)
    assert status == 401
    assert b"x-injected" not in headers
    assert orjson.loads(payload)["error"]["code"] == "invalid_api_key"
    assert_still_serving(demo_cast)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer ключ-не-ascii".encode(), b"Bearer \xff\xfe\x80", "Bearer sk-siraya-✓".encode(), b"\xe2\x80\x8bBearer x"],
    ids=["cyrillic", "invalid-bytes", "emoji-suffix", "zero-width-prefix"],
)
def test_non_ascii_authorization_gets_401(demo_cast, authorization):
    body = orjson.dumps(GOOD)
    status, headers, payload = raw_request(demo_cast.url, chat_head(authorization, body), body)
    assert status == 401, payload
    assert headers[b"content-type"] == b"application/json"
    assert orjson.loads(payload)["error"]["type"] == "authentication_error"
    response = httpx.get(demo_cast.url + "/v1/models", headers={"Authorization": authorization}, timeout=10)
    assert_openai_error(response, 401)
    assert_still_serving(demo_cast)


def assert_parser_refusal(url: str, head: bytes, body: bytes) -> None:
    status, headers, payload = raw_request(url, head, body)
    assert status == 400
    assert headers[b"content-type"] == b"application/json"
    assert orjson.loads(payload)["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "extra",
    [
        b"X-Padding: " + b"a" * 20_000 + b"\r\n",
        b"".join(b"X-H%d: v\r\n" % i for i in range(600)),
        b"X-Nul: a\x00b\r\n",
        b"X-Bare-CR: a\rInjected: b\r\n",
    ],
    ids=["20kb-header", "600-headers", "nul-byte", "bare-cr"],
)
def test_header_refused_by_the_http_parser_gets_openai_shaped_400(demo_cast, extra):
    body = orjson.dumps(GOOD)
    assert_parser_refusal(demo_cast.url, chat_head(f"Bearer {demo_cast.key}".encode(), body, extra), body)
    assert_still_serving(demo_cast)


def test_megabytes_of_headers_are_refused_and_server_keeps_serving(demo_cast):
    body = orjson.dumps(GOOD)
    head = chat_head(f"Bearer {demo_cast.key}".encode(), body, b"X-Padding: " + b"a" * 2_000_000 + b"\r\n")
    try:
        status, _, _ = raw_request(demo_cast.url, head, body)
        assert status == 400
    except ConnectionError:
        pass  # refused mid-upload: the server closed while the client was still sending
    assert_still_serving(demo_cast)


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/chat/completions/extra", "/v1/models/x/y", "/v1"])
def test_unknown_api_paths_get_openai_shaped_404(demo_cast, path):
    response = httpx.get(demo_cast.url + path, headers=demo_cast.headers(), timeout=10)
    error = assert_openai_error(response, 404)
    assert error["code"] == "not_found"


def test_non_api_404_stays_html(live_router):
    response = httpx.get(live_router.url + "/nope", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


def test_wrong_method_and_bad_host_get_openai_shaped_errors(demo_cast):
    response = httpx.get(demo_cast.url + "/v1/chat/completions", headers=demo_cast.headers(), timeout=10)
    assert assert_openai_error(response, 405)["code"] == "method_not_allowed"
    response = httpx.post(demo_cast.url + "/v1/models", headers=demo_cast.headers(), timeout=10)
    assert assert_openai_error(response, 405)["code"] == "method_not_allowed"
    response = httpx.get(
        demo_cast.url + "/v1/models", headers={**demo_cast.headers(), "Host": "evil.example"}, timeout=10
    )
    assert assert_openai_error(response, 400)["code"] == "bad_request"

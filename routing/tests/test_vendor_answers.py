"""Vendors' answers are input too: broken usage figures and vendor error text, per vendor kind.

A vendor's usage figure is billed only when it is an integer from 0 to ``MAX_VENDOR_TOKENS``;
anything else counts as missing (the router counts) and is logged. A vendor's error text
(which names the operator's organisation or project, and may quote a key) never reaches a
client: the client gets the router's own message and code for the error's class; the log,
the usage record and the admin get the vendor's words with credentials redacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from billing.models import UsageRecord
from billing.services import api_key_create
from conftest import Cast, LiveServer, wait_settled
from fakevendors.azure import FakeAzure
from fakevendors.bedrock import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FakeBedrock
from fakevendors.byteplus import FakeBytePlus
from fakevendors.onerouter import FakeOneRouter
from fakevendors.openai import FakeOpenAI
from fakevendors.server import FakeServer
from fakevendors.vertex import FakeVertex
from fakevendors.vertex.oauth import service_account_key
from lib import tokens
from routing.errors import UPSTREAM_MESSAGES, UpstreamError, client_attempts, client_error_message
from routing.services import model_create, vendor_create
from routing.vendors.azure import AzureAdapter
from routing.vendors.base import MAX_VENDOR_TOKENS, VendorConfig, vendor_token_count
from routing.vendors.vertex import gemini

MESSAGES = [{"role": "user", "content": "Tell me a long story about a cat."}]
KINDS = ["openai", "azure", "byteplus", "onerouter", "bedrock", "gemini", "claude"]
# Field names of each kind's prompt and completion figures on its own wire.
USAGE_FIELDS = {
    "openai": ("prompt_tokens", "completion_tokens"),
    "azure": ("prompt_tokens", "completion_tokens"),
    "byteplus": ("prompt_tokens", "completion_tokens"),
    "onerouter": ("prompt_tokens", "completion_tokens"),
    "bedrock": ("inputTokens", "outputTokens"),
    "gemini": ("promptTokenCount", "candidatesTokenCount"),
    "claude": ("input_tokens", "output_tokens"),
}
BAD_FIGURES = [-5, "12", 1.5, True, 10**30, None]
# What a vendor's error says about the operator: its organisation, its project, a key.
ORG, PROJECT, STRAY_KEY = "org-SECRETORG", "project-secret-123", "sk-live-" + "q" * 24


@dataclass
class Setup:
    kind: str
    cast: Cast
    fake: FakeServer
    secret: str  # the vendor credential an echoing vendor would quote

    @property
    def scenario(self) -> Any:
        return self.fake.scenario  # type: ignore[attr-defined]


def _cast(router: LiveServer, kind: str, base_url: str, credentials: dict[str, Any], **extra: Any) -> Cast:
    vendor = vendor_create("fake-vendor", kind, base_url, extra.pop("options", {}), credentials)
    deployments = [(vendor, extra.pop("upstream", "fake-model"), 0, 1)]
    model_create("test/fake", deployments=deployments, input_price=Decimal("1"), output_price=Decimal("2"))
    api_key, plaintext = api_key_create("tester")
    return Cast(router.url, plaintext, api_key, "test/fake")


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, live_router: LiveServer, transactional_db: None) -> Iterator[Setup]:
    kind = request.param
    key = f"{kind}-vendor-key-0123456789abcdef"
    fake: FakeServer
    if kind in ("openai", "onerouter"):
        fake = FakeOpenAI() if kind == "openai" else FakeOneRouter(api_key=key)
        fake.start()
        cast = _cast(live_router, kind, fake.url + "/v1", {"api_key": key})
    elif kind == "azure":
        fake = FakeAzure(api_key=key)
        fake.start()
        cast = _cast(live_router, kind, fake.url, {"api_key": key}, options={"api_version": "2025-04-01-preview"})
    elif kind == "byteplus":
        fake = FakeBytePlus(api_key=key)
        fake.start()
        cast = _cast(live_router, kind, fake.url, {"api_key": key}, upstream="ep-20250101000000-abcde")
    elif kind == "bedrock":
        fake = FakeBedrock()
        fake.start()
        key = SECRET_ACCESS_KEY
        credentials = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
        cast = _cast(live_router, kind, fake.url, credentials, options={"region": REGION},
                     upstream="anthropic.claude-3-5-haiku-20241022-v1:0")  # fmt: skip
    else:
        fake = FakeVertex()
        fake.start()
        account = service_account_key(fake.url + "/token")
        fake.trust(account)  # type: ignore[attr-defined]
        key = "Bearer ya29.fake-token-the-vendor-echoes"  # Vertex sees only the access token
        options = {"project": fake.project, "location": fake.location}  # type: ignore[attr-defined]
        upstream = "gemini-2.5-flash" if kind == "gemini" else "anthropic/claude-sonnet-4@20250514"
        cast = _cast(live_router, "vertex", fake.url, {"credentials_json": account}, options=options, upstream=upstream)
    try:
        yield Setup(kind, cast, fake, key)
        wait_settled()
    finally:
        fake.stop()


def stream(cast: Cast) -> tuple[httpx.Response, list[dict[str, Any]]]:
    body = {"model": cast.model, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    response = httpx.post(cast.url + "/v1/chat/completions", json=body, headers=cast.headers(), timeout=30)
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads and payloads[-1] == "[DONE]", response.text[-500:]
    return response, [orjson.loads(p) for p in payloads[:-1]]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join((c.get("delta") or {}).get("content") or "" for chunk in chunks for c in chunk.get("choices") or ())


def log_lines(router: LiveServer, generation_id: str, needle: str, timeout: float = 5.0) -> list[str]:
    """The live router's log lines of ``generation_id`` that hold ``needle`` (waiting for them a little)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in router.log().splitlines() if generation_id in line and needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


# -- usage figures ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, MAX_VENDOR_TOKENS])
def test_integer_figures_within_the_cap_are_used(value):
    assert vendor_token_count(value, "v", "prompt_tokens") == value


@pytest.mark.parametrize("value", [-1, MAX_VENDOR_TOKENS + 1, 10**30, True, False, 1.5, 3.0, "12", [3], {"n": 3}])
def test_other_figures_count_as_missing_and_are_logged(value, caplog):
    with caplog.at_level(logging.WARNING, logger="routing.vendors.base"):
        assert vendor_token_count(value, "acme", "completion_tokens") is None
    [logged] = caplog.records
    assert "acme" in logged.getMessage() and "completion_tokens" in logged.getMessage()
    assert (logged.vendor, logged.field) == ("acme", "completion_tokens")  # type: ignore[attr-defined]
    assert len(logged.getMessage()) < 200  # the figure's repr is truncated


def test_a_missing_figure_is_not_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="routing.vendors.base"):
        assert vendor_token_count(None, "acme", "prompt_tokens") is None
    assert not caplog.records


@pytest.mark.parametrize("value", BAD_FIGURES, ids=repr)
def test_broken_usage_figures_are_counted_by_the_router_and_the_stream_settles(setup, value, live_router):
    prompt_field, completion_field = USAGE_FIELDS[setup.kind]
    setup.scenario.usage_override = {prompt_field: value, completion_field: value}
    response, chunks = stream(setup.cast)
    assert response.status_code == 200
    assert not any("error" in chunk for chunk in chunks), chunks[-2:]
    generation_id = response.headers["x-generation-id"]
    record = setup.cast.record(generation_id)
    delivered = text_of(chunks)
    prompt, completion = tokens.count_messages(MESSAGES, "cl100k_base"), tokens.count_text(delivered, "cl100k_base")
    assert (record.status, record.reserved_cost) == ("completed", Decimal("0"))
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (None, None)
    assert (record.usage_source, record.prompt_tokens, record.completion_tokens) == ("router", prompt, completion)
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
    if value is not None:
        [line, *_] = log_lines(live_router, generation_id, prompt_field)
        assert "fake-vendor" in line and "unusable" in line and '"level":"WARNING"' in line


def test_broken_usage_figures_in_a_whole_answer_are_counted_by_the_router(setup):
    prompt_field, completion_field = USAGE_FIELDS[setup.kind]
    setup.scenario.usage_override = {prompt_field: -5, completion_field: "12"}
    response = setup.cast.chat(messages=MESSAGES)
    assert response.status_code == 200, response.text
    record = setup.cast.record(response.headers["x-generation-id"])
    answer = response.json()["choices"][0]["message"]["content"]
    prompt, completion = tokens.count_messages(MESSAGES, "cl100k_base"), tokens.count_text(answer, "cl100k_base")
    assert (record.status, record.reserved_cost, record.usage_source) == ("completed", Decimal("0"), "router")
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, completion)
    assert response.json()["usage"]["prompt_tokens"] == prompt


# -- vendor error text -----------------------------------------------------------------------


def marker(setup: Setup) -> str:
    return f"Quota of {ORG} for {PROJECT} exhausted; key {setup.secret[:60]} and {STRAY_KEY}"


def fail_before_stream(setup: Setup) -> None:
    """Make the fake refuse every request with an error whose text names the operator."""
    text, s = marker(setup), setup.scenario
    if setup.kind == "bedrock":
        s.status, s.error_type, s.error_message = 400, "ValidationException", text
    elif setup.kind == "gemini":
        s.status, s.error_body = 400, {"error": {"code": 400, "message": text, "status": "INVALID_ARGUMENT"}}
    elif setup.kind == "claude":
        s.status, s.error_body = 400, {"type": "error", "error": {"type": "invalid_request_error", "message": text}}
    elif setup.kind == "byteplus":
        s.status = 400
        s.error_body = {"error": {"code": "InvalidParameter", "message": text, "param": ORG, "type": "BadRequest"}}
    else:
        s.status, s.error_body = 400, {"error": {"message": text, "type": "invalid_request_error", "code": ORG}}


def fail_mid_stream(setup: Setup) -> None:
    s = setup.scenario
    if setup.kind == "bedrock":
        s.exception_after, s.exception_message = 2, marker(setup)
    else:
        s.error_after, s.error_text = 2, marker(setup)


def assert_client_safe(text: str, setup: Setup) -> None:
    for secret in (ORG, PROJECT, STRAY_KEY, setup.secret[:60], "SECRETORG"):
        assert secret not in text, (secret, text[:500])


def assert_operator_sees(text: str, setup: Setup) -> None:
    """The operator's copy: the vendor's words, with the credentials and key shapes redacted."""
    assert ORG in text and PROJECT in text and "[redacted]" in text, text
    assert setup.secret[:60] not in text and STRAY_KEY not in text


def check_operator_views(setup: Setup, generation_id: str, router: LiveServer, admin_client: Any) -> UsageRecord:
    record = setup.cast.record(generation_id)
    assert (record.status, record.reserved_cost) == ("error", Decimal("0"))
    assert_operator_sees(record.error_message, setup)
    assert_operator_sees(record.attempts[0]["message"], setup)
    page = admin_client.get(f"/admin/billing/usagerecord/{record.pk}/change/")
    assert page.status_code == 200
    assert_operator_sees(page.content.decode(), setup)
    [line, *_] = log_lines(router, generation_id, "SECRETORG")
    assert_operator_sees(line, setup)
    generation = httpx.get(
        f"{setup.cast.url}/v1/generation?id={generation_id}", headers=setup.cast.headers(), timeout=10
    )
    assert generation.status_code == 200
    assert_client_safe(generation.text, setup)
    error = generation.json()["data"]["error"]
    assert error == {"code": record.error_code, "message": UPSTREAM_MESSAGES[record.error_code]}
    assert all(set(a) <= {"deployment", "vendor", "upstream_model", "outcome", "latency_ms", "status", "code"}
               for a in generation.json()["data"]["attempts"])  # fmt: skip
    return record


def test_vendor_error_text_before_the_stream_never_reaches_the_client(setup, live_router, admin_client):
    fail_before_stream(setup)
    raw = httpx.post(
        setup.cast.url + "/v1/chat/completions",
        json={"model": setup.cast.model, "messages": MESSAGES, "stream": True},
        headers=setup.cast.headers(),
        timeout=30,
    )
    assert raw.status_code == 400
    assert_client_safe(raw.text + str(raw.headers), setup)
    error = raw.json()["error"]
    assert (error["code"], error["message"]) == ("upstream_invalid_request", UPSTREAM_MESSAGES[error["code"]])
    assert error["param"] is None  # the vendor's param is not one of the client's fields
    check_operator_views(setup, raw.headers["x-generation-id"], live_router, admin_client)

    client = openai.OpenAI(base_url=setup.cast.url + "/v1", api_key=setup.cast.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=setup.cast.model, messages=MESSAGES)  # type: ignore[arg-type]
    assert_client_safe(str(raised.value) + str(raised.value.body) + str(raised.value.response.headers), setup)
    check_operator_views(setup, raised.value.response.headers["x-generation-id"], live_router, admin_client)


def test_vendor_error_text_mid_stream_never_reaches_the_client(setup, live_router, admin_client):
    fail_mid_stream(setup)
    response, chunks = stream(setup.cast)
    assert response.status_code == 200
    assert_client_safe(response.text + str(response.headers), setup)
    error = chunks[-1]["error"]
    assert error["code"] in UPSTREAM_MESSAGES and error["message"] == UPSTREAM_MESSAGES[error["code"]]
    record = check_operator_views(setup, response.headers["x-generation-id"], live_router, admin_client)
    assert record.completion_tokens == 2  # billed for what was delivered

    client = openai.OpenAI(base_url=setup.cast.url + "/v1", api_key=setup.cast.key, max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model=setup.cast.model, messages=MESSAGES, stream=True):  # type: ignore[arg-type]
            received.append(chunk)
    assert received  # the answer had begun
    assert_client_safe(str(raised.value) + str(raised.value.body), setup)


def test_a_key_owner_sees_the_routers_message_on_the_usage_page(setup, client, django_user_model, admin_client):
    fail_before_stream(setup)
    response = setup.cast.chat(messages=MESSAGES)
    record = setup.cast.record(response.headers["x-generation-id"])
    owner = django_user_model.objects.create_user("owner", password="x")
    setup.cast.api_key.owner = owner
    setup.cast.api_key.save(update_fields=["owner"])
    client.force_login(owner)
    page = client.get(f"/usage/generations/{record.generation_id}/")
    assert page.status_code == 200
    assert_client_safe(page.content.decode(), setup)
    assert UPSTREAM_MESSAGES[record.error_code].replace("'", "&#x27;") in page.content.decode()
    staff_page = admin_client.get(f"/usage/generations/{record.generation_id}/")
    assert_operator_sees(staff_page.content.decode(), setup)


def test_a_vendor_param_reaches_the_client_only_when_it_names_a_client_field(live_router, transactional_db):
    with FakeBytePlus(api_key="ark-key-for-tests-0123456789abcdef") as fake:
        cast = _cast(live_router, "byteplus", fake.url, {"api_key": "ark-key-for-tests-0123456789abcdef"},
                     upstream="ep-20250101000000-abcde")  # fmt: skip
        for param, seen in [("temperature", "temperature"), ("org-SECRETORG.quota", None)]:
            fake.scenario.status = 400
            fake.scenario.error_body = {"error": {"code": "InvalidParameter", "message": "bad", "param": param}}
            error = cast.chat(messages=MESSAGES).json()["error"]
            assert (error["code"], error["param"]) == ("upstream_invalid_request", seen)
        wait_settled()


def test_filter_categories_reach_the_client_only_when_they_are_documented_names():
    vendor = VendorConfig(1, "azure-eu", "azure", "https://r.openai.azure.com", {}, {"api_key": "k" * 20}, 1, 1, 1)
    result = {"hate": {"filtered": True}, f"{ORG} {PROJECT}": {"filtered": True}, "violence": {"filtered": False}}
    body = {"error": {"code": "content_filter", "message": f"{ORG} blocked",
                      "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": result}}}  # fmt: skip
    error = AzureAdapter(vendor).on_error(400, orjson.dumps(body), httpx.Headers())
    assert (error.status, error.code, error.param) == (400, "content_filter", "messages")
    assert "(filtered: hate)" in error.message and "SECRETORG" not in error.message
    assert "SECRETORG" in error.detail  # the operator's copy


def test_a_block_reason_reaches_the_client_only_when_it_is_a_documented_reason():
    for reason, shown in [("PROHIBITED_CONTENT", True), (f"{ORG} quota", False)]:
        with pytest.raises(UpstreamError) as blocked:
            gemini.StreamState("v").events({"promptFeedback": {"blockReason": reason}})
        assert blocked.value.code == "content_filter" and (reason in blocked.value.message) == shown


def test_records_from_before_the_mapping_show_clients_the_class_message_only():
    # A record settled by an older router: the vendor's code and words in the record itself.
    words = f"Vendor 'aws' reported throttlingException: {ORG} over quota"
    attempts = [{"vendor": "aws", "outcome": "error", "status": 429, "code": "throttlingException",
                 "vendor_status": 429, "message": words}]  # fmt: skip
    assert client_error_message("throttlingException", words, attempts) == UPSTREAM_MESSAGES["upstream_rate_limited"]
    assert client_attempts(attempts) == [{"vendor": "aws", "outcome": "error", "status": 429,
                                          "code": "throttlingException"}]  # fmt: skip
    # The router's own failures keep their message.
    router_error = "The router is shutting down."
    assert client_error_message("server_shutdown", router_error, [{"outcome": "cancelled"}]) == router_error

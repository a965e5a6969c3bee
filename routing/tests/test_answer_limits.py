"""Completion limits against every vendor kind, the router in process (``routing.tests.inprocess``).

The model's ceiling goes upstream in each vendor's own field when the client sets no limit
(the credit hold assumed it), and the router's own cut at ``max_tokens`` is only a safety net:
an answer a vendor ended within its limit is never cut, even when the router's tokenizer counts
it longer; an answer of a vendor that ignores the limit is cut past the tokenizer margin and
billed for what was delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson
import pytest

from billing.credit import Ask, ask_tokens
from billing.services import api_key_create
from fakevendors.azure import FakeAzure
from fakevendors.bedrock import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FakeBedrock
from fakevendors.byteplus import FakeBytePlus
from fakevendors.onerouter import FakeOneRouter
from fakevendors.openai import FakeOpenAI, words
from fakevendors.vertex import FakeVertex
from fakevendors.vertex.oauth import service_account_key
from routing.dialects.chat.schema import parse_chat_request
from routing.relay.limits import cut_threshold
from routing.routes import model_route_cached
from routing.services import model_create, vendor_create
from routing.tests.inprocess import InProcessRelay
from routing.tests.vendor_cast import delta_text, sse_chunks
from routing.vendors import adapter_class
from routing.vendors.base import UpstreamCall, VendorConfig
from routing.vendors.openai import OpenAIAdapter

KEY = "vendor-key-for-tests-0123456789abcdef"
CEILING = 300  # the router model's max_output_tokens
LIMIT = 20  # the client's max_tokens in the cut tests
# A vendor whose tokenizer counts 1.5 of the router's tokens as one of its own: honouring a limit
# of 20 it writes 30 of the router's tokens, within the margin (cut_threshold(20) == 46).
RATIO = 1.5
HONOURED = int(LIMIT * RATIO)
KINDS = ["openai", "azure", "byteplus", "onerouter", "gemini", "claude", "bedrock"]
# Where each kind's request carries the completion limit.
LIMIT_FIELD: dict[str, tuple[str, ...]] = {
    "openai": ("max_tokens",),  # an OpenAI-compatible server that is not OpenAI itself
    "azure": ("max_tokens",),  # deployment URL at api-version 2024-10-21
    "byteplus": ("max_completion_tokens",),  # ModelArk's max_tokens would leave reasoning out
    "onerouter": ("max_tokens",),
    "gemini": ("generationConfig", "maxOutputTokens"),
    "claude": ("max_tokens",),
    "bedrock": ("inferenceConfig", "maxTokens"),
}


@dataclass
class Rig:
    kind: str
    cast: InProcessRelay
    fake: Any

    def sent(self) -> dict[str, Any]:
        """The body of the last request the fake vendor received."""
        requests = self.fake.api_requests if isinstance(self.fake, FakeVertex) else self.fake.requests
        assert requests, "the vendor got no request"
        return requests[-1].json()

    def sent_limit(self) -> Any:
        value: Any = self.sent()
        for name in LIMIT_FIELD[self.kind]:
            value = (value or {}).get(name)
        return value

    def scenario(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.fake.scenario, name, value)


def _vendor(kind: str, stack: ExitStack) -> tuple[Any, Any, str]:
    """Start a fake of ``kind``; return (fake, vendor, upstream model)."""
    if kind in ("gemini", "claude"):
        vertex = stack.enter_context(FakeVertex())
        account = service_account_key(vertex.url + "/token")
        vertex.trust(account)
        options = {"project": vertex.project, "location": vertex.location}
        vendor = vendor_create("fake", "vertex", vertex.url, options, {"credentials_json": account})
        upstream = "gemini-2.5-flash" if kind == "gemini" else "anthropic/claude-sonnet-4@20250514"
        return vertex, vendor, upstream
    if kind == "bedrock":
        bedrock = stack.enter_context(FakeBedrock())
        credentials = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
        vendor = vendor_create("fake", "bedrock", bedrock.url, {"region": REGION}, credentials)
        return bedrock, vendor, "anthropic.claude-3-5-haiku-20241022-v1:0"
    fakes = {"openai": FakeOpenAI, "azure": FakeAzure, "byteplus": FakeBytePlus, "onerouter": FakeOneRouter}
    fake: FakeOpenAI = stack.enter_context(fakes[kind]() if kind == "openai" else fakes[kind](api_key=KEY))
    base_url = fake.url + "/v1" if kind in ("openai", "onerouter") else fake.url
    vendor = vendor_create("fake", kind, base_url, {}, {"api_key": KEY})
    return fake, vendor, "fake-model"


@pytest.fixture(params=KINDS)
def rig(request: pytest.FixtureRequest, relay: InProcessRelay) -> Iterator[Rig]:
    with ExitStack() as stack:
        fake, vendor, upstream = _vendor(request.param, stack)
        model_create(
            "test/limits",
            deployments=[(vendor, upstream, 0, 1)],
            input_price=Decimal("1"),
            output_price=Decimal("2"),
            max_output_tokens=CEILING,
        )
        yield Rig(request.param, replace(relay, model="test/limits"), fake)


def answer_of(response: Any, stream: bool) -> tuple[str, str]:
    """(answer text, last finish reason) of a streamed or whole answer."""
    assert response.status_code == 200, response.text
    if not stream:
        (choice,) = response.json()["choices"]
        return choice["message"]["content"], choice["finish_reason"]
    chunks = sse_chunks(response.text)
    reasons = [c["finish_reason"] for chunk in chunks for c in chunk.get("choices") or [] if c.get("finish_reason")]
    return delta_text(chunks), reasons[-1]


@pytest.mark.parametrize("stream", [True, False])
def test_model_ceiling_is_sent_in_the_vendors_field_when_the_client_sets_none(rig, stream):
    rig.scenario(tokens=3)
    response = rig.cast.chat(stream=stream)
    assert response.status_code == 200, response.text
    assert rig.sent_limit() == CEILING
    # The credit hold counted the same ceiling.
    assert ask_tokens(model_route_cached("test/limits"), Ask([{"role": "user", "content": "x"}]))[1] == CEILING
    if rig.kind in ("openai", "azure", "byteplus", "onerouter"):
        assert {"max_tokens", "max_completion_tokens"} & set(rig.sent()) == {LIMIT_FIELD[rig.kind][0]}


def test_client_limit_is_sent_as_given(rig):
    rig.scenario(tokens=3)

    def sent() -> Any:
        if rig.kind in ("openai", "azure", "byteplus", "onerouter"):
            # The OpenAI-compatible kinds pass the client's field on as named, and add none.
            return rig.sent().get("max_tokens"), rig.sent().get("max_completion_tokens")
        return rig.sent_limit()

    openai_family = rig.kind in ("openai", "azure", "byteplus", "onerouter")
    assert rig.cast.chat(stream=True, max_tokens=40).status_code == 200
    assert sent() == ((40, None) if openai_family else 40)
    assert rig.cast.chat(max_completion_tokens=41).status_code == 200
    assert sent() == ((None, 41) if openai_family else 41)


@pytest.mark.parametrize("stream", [True, False])
def test_answer_the_vendor_ended_within_its_limit_is_not_cut(rig, stream):
    """The vendor's tokenizer counts the 30-token answer as 20: within its limit, so it stands whole,
    billed at the vendor's figure."""
    rig.scenario(tokens=HONOURED, tokenizer_ratio=RATIO)
    response = rig.cast.chat(stream=stream, max_tokens=LIMIT)
    text, finish = answer_of(response, stream)
    assert (text, finish) == ("".join(words(HONOURED)), "stop")  # the vendor's own finish reason
    record = rig.cast.record(response.headers["x-generation-id"])
    # Billed at the vendor's own figure; Azure's 2024-10-21 streams report none: counted instead.
    billed, source = (HONOURED, "router") if (rig.kind, stream) == ("azure", True) else (LIMIT, "vendor")
    assert (record.status, record.finish_reason, record.usage_source) == ("completed", "stop", source)
    assert (record.completion_tokens, record.tokens_delivered) == (billed, HONOURED)


@pytest.mark.parametrize("stream", [True, False])
def test_answer_of_a_vendor_ignoring_the_limit_is_cut_past_the_margin_and_billed_as_delivered(rig, stream):
    # It also counts differently: whatever it reported before the cut, the router bills what it delivered.
    rig.scenario(tokens=200, honour_max_tokens=False, tokenizer_ratio=2.0)
    response = rig.cast.chat(stream=stream, max_tokens=LIMIT)
    text, finish = answer_of(response, stream)
    cut = cut_threshold(LIMIT)
    assert cut == 46
    assert (text, finish) == ("".join(words(cut)), "length")
    record = rig.cast.record(response.headers["x-generation-id"], timeout=15)
    assert (record.status, record.finish_reason) == ("completed", "length")
    assert (record.completion_tokens, record.tokens_delivered) == (cut, cut)
    assert record.cost == Decimal(record.prompt_tokens * 1 + cut * 2) / 1_000_000


@pytest.fixture
def modelark(relay: InProcessRelay) -> Iterator[Rig]:
    with ExitStack() as stack:
        fake, vendor, upstream = _vendor("byteplus", stack)
        model_create("test/limits", deployments=[(vendor, upstream, 0, 1)], input_price=Decimal("1"),
                     output_price=Decimal("2"), max_output_tokens=CEILING)  # fmt: skip
        yield Rig("byteplus", replace(relay, model="test/limits"), fake)


@pytest.mark.parametrize("stream", [True, False])
def test_modelark_reasoning_does_not_count_against_max_tokens(modelark, stream):
    """ModelArk's max_tokens bounds the answer only: 40 reasoning tokens, then the 8 answer
    tokens asked for, all reach the client (the router once cut them at 8 tokens in all)."""
    modelark.fake.reasoning_tokens = 40
    modelark.scenario(tokens=48)
    response = modelark.cast.chat(stream=stream, max_tokens=8)
    assert modelark.sent()["max_tokens"] == 8 and "max_completion_tokens" not in modelark.sent()
    text, finish = answer_of(response, stream)
    assert (text, finish) == ("".join(words(48)[40:]), "stop")
    if stream:
        assert delta_text(sse_chunks(response.text), "reasoning_content") == "".join(words(40))
    record = modelark.cast.record(response.headers["x-generation-id"])
    assert (record.finish_reason, record.completion_tokens, record.reasoning_tokens) == ("stop", 48, 40)


@pytest.mark.parametrize("stream", [True, False])
def test_modelark_ignoring_max_tokens_is_cut_by_its_answer_alone(modelark, stream):
    """Reasoning passes whole; the answer is cut once it passes the margin on its own."""
    modelark.fake.reasoning_tokens = 40
    modelark.scenario(tokens=200, honour_max_tokens=False)
    response = modelark.cast.chat(stream=stream, max_tokens=8)
    text, finish = answer_of(response, stream)
    cut = cut_threshold(8)
    assert (text, finish) == ("".join(words(40 + cut)[40:]), "length")
    record = modelark.cast.record(response.headers["x-generation-id"], timeout=15)
    assert (record.finish_reason, record.completion_tokens) == ("length", 40 + cut)  # reasoning is billed too


def test_modelark_hold_covers_reasoning_beside_max_tokens(modelark):
    """ModelArk's max_tokens leaves reasoning unbounded by it, so the credit hold adds the model's
    ceiling for reasoning; max_completion_tokens bounds both, so it is held as it is."""
    modelark.scenario(tokens=3)
    # Worst cases at USD 1/2 per million: 8 completion tokens about 0.00003, 8 + CEILING about 0.0006.
    api_key, plaintext = api_key_create("limited", credit_limit=Decimal("0.0002"))
    cast = replace(modelark.cast, key=plaintext, api_key=api_key)
    refused = cast.chat(max_tokens=8)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "credit_limit_exceeded"
    assert cast.chat(max_completion_tokens=8).status_code == 200


def test_modelark_max_completion_tokens_counts_reasoning(modelark):
    """With max_completion_tokens ModelArk counts reasoning too, and so does the router's cut."""
    modelark.fake.reasoning_tokens = 40
    modelark.scenario(tokens=200, honour_max_tokens=False)
    response = modelark.cast.chat(stream=True, max_completion_tokens=8)
    chunks = sse_chunks(response.text)
    cut = cut_threshold(8)
    assert delta_text(chunks, "reasoning_content") == "".join(words(cut))
    assert delta_text(chunks) == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def adapter_body(kind: str, base_url: str, options: dict[str, Any], **client: Any) -> dict[str, Any]:
    """The body an adapter of ``kind`` builds for a client request (no network)."""
    config = VendorConfig(1, "v", kind, base_url, options, {"api_key": KEY}, 5.0, 30.0, 30.0)
    request = parse_chat_request(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **client})
    )
    adapter = adapter_class(kind)(config)
    assert isinstance(adapter, OpenAIAdapter)
    return adapter.body(UpstreamCall(request, "up", "gen-1", CEILING), stream=False)


def limits_in(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in ("max_tokens", "max_completion_tokens") if name in body}


@pytest.mark.parametrize(
    ("kind", "base_url", "options", "expected"),
    [
        # OpenAI's reasoning models refuse max_tokens; max_completion_tokens works for every model.
        ("openai", "https://api.openai.com/v1", {}, "max_completion_tokens"),
        ("openai", "http://127.0.0.1:8000/v1", {}, "max_tokens"),
        ("openai", "http://127.0.0.1:8000/v1", {"max_tokens_field": "max_completion_tokens"}, "max_completion_tokens"),
        ("openai", "https://api.openai.com/v1", {"max_tokens_field": "max_tokens"}, "max_tokens"),
        ("azure", "https://r.openai.azure.com", {"api_style": "v1"}, "max_completion_tokens"),
        ("azure", "https://r.openai.azure.com", {"api_version": "2025-04-01-preview"}, "max_completion_tokens"),
        ("azure", "https://r.openai.azure.com", {"api_version": "2024-10-21"}, "max_tokens"),
        ("azure", "https://r.openai.azure.com", {"api_version": "2024-06-01"}, "max_tokens"),
        ("azure", "https://r.openai.azure.com", {"max_tokens_field": "max_completion_tokens"}, "max_completion_tokens"),
        ("byteplus", "https://ark.ap-southeast.bytepluses.com", {}, "max_completion_tokens"),
        ("onerouter", "", {}, "max_tokens"),
    ],
)
def test_ceiling_field_per_vendor_and_api(kind, base_url, options, expected):
    assert limits_in(adapter_body(kind, base_url, options)) == {expected: CEILING}
    # A client's explicit null is no limit: the ceiling replaces it, in the one right field.
    assert limits_in(adapter_body(kind, base_url, options, max_tokens=None)) == {expected: CEILING}
    assert limits_in(adapter_body(kind, base_url, options, max_tokens=7)) == {"max_tokens": 7}


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_unknown_max_tokens_field_is_refused(kind):
    with pytest.raises(ValueError, match="--max-tokens-field"):
        adapter_class(kind).validate("https://r.openai.azure.com", {"max_tokens_field": "limit"}, {"api_key": KEY})


def test_more_than_one_choice_is_refused_so_hold_and_limit_stay_per_request(relay_openai, fake_openai):
    """The hold counts one answer of max_tokens (or the ceiling) and the vendor is asked for one:
    n > 1 would multiply what the vendor may write, so it is refused before any vendor call."""
    response = relay_openai.chat(n=2, max_tokens=5)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("n", "unsupported_value")
    assert fake_openai.requests == []

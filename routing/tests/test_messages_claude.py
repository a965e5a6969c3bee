"""``POST /v1/messages`` answered by Claude on Vertex (``rawPredict``) and on Bedrock (``InvokeModel``)
in Claude's own format, with Anthropic's SDK as the client, over real sockets.

The fakes record the body they got, sign the thinking they send and check, as Claude does, that
a later turn brings back exactly the signature they issued; they report cache reads and writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.claude import INPUT_TOKENS
from fakevendors.openai import words
from routing.models import Vendor
from routing.services import model_create, vendor_create
from routing.tests.vertex_helpers import UPSTREAM

CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close
EPHEMERAL = {"type": "ephemeral"}
DOCUMENT = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQKJcfsj6IK"},
    "title": "Report",
    "cache_control": EPHEMERAL,
}
ASK = [{"role": "user", "content": [DOCUMENT, {"type": "text", "text": "Summarise it.", "cache_control": EPHEMERAL}]}]
SYSTEM = [{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}]
TOOLS = [
    {"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}
]
THINKING = {"type": "enabled", "budget_tokens": 2048}


@dataclass
class Claude:
    """One Claude deployment behind the live router: its cast, its fake, and how the fake names things."""

    cast: Cast
    fake: Any
    version: str  # the cloud's anthropic_version
    prompt_tokens: int  # the fake's input_tokens
    thoughts: str  # the fake scenario's name for thinking words
    stream_flag: bool  # whether the cloud's streamed body says "stream": true

    def sent(self) -> dict[str, Any]:
        requests = getattr(self.fake, "api_requests", None) or self.fake.requests
        return requests[-1].json()

    def last_request(self) -> Any:
        return (getattr(self.fake, "api_requests", None) or self.fake.requests)[-1]

    def think(self, count: int) -> None:
        setattr(self.fake.scenario, self.thoughts, count)

    def sdk(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=self.cast.key, base_url=self.cast.url, max_retries=0, timeout=30)


@pytest.fixture
def vertex_claude(vertex_casts, fake_vertex) -> Claude:
    return Claude(vertex_casts["claude"], fake_vertex, "vertex-2023-10-16", INPUT_TOKENS, "thoughts", True)


@pytest.fixture
def bedrock_claude(bedrock) -> Claude:
    cast, fake = bedrock()
    return Claude(cast, fake, "bedrock-2023-05-31", fake.prompt_tokens, "reasoning_tokens", False)


@pytest.fixture(params=["vertex", "bedrock"])
def claude(request, live_router, transactional_db) -> Claude:
    return request.getfixturevalue(f"{request.param}_claude")


def ask(client: anthropic.Anthropic, model: str, stream: bool, **body: Any) -> tuple[Any, list[str]]:
    """Return the final message and, streamed, the kinds of content deltas the SDK saw.

    ``top_k`` goes in ``extra_body``: this SDK's ``create`` no longer names it."""
    body = {"model": model, "max_tokens": 100, "messages": ASK, **body}
    if "top_k" in body:
        body["extra_body"] = {"top_k": body.pop("top_k")}
    if not stream:
        return client.messages.create(**body), []
    with client.messages.stream(**body) as events:
        kinds: list[str] = [event.delta.type for event in events if event.type == "content_block_delta"]
        return events.get_final_message(), kinds


@pytest.mark.parametrize("stream", [False, True])
def test_claude_only_blocks_reach_the_vendor_as_sent(claude, stream):
    extra = {"system": SYSTEM, "tools": TOOLS, "top_k": 5, "thinking": THINKING, "metadata": {"user_id": "u-1"}}
    with claude.sdk() as client:
        message, _ = ask(client, claude.cast.model, stream, **extra)
    expected: dict[str, Any] = {"max_tokens": 100, "messages": ASK, **extra, "anthropic_version": claude.version}
    if stream and claude.stream_flag:
        expected["stream"] = True
    assert claude.sent() == expected
    assert message.content[0].text == "".join(words(5))
    assert claude.cast.record(message.id).status == "completed"


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_signature_round_trips_into_the_next_turn(claude, stream):
    claude.think(3)
    with claude.sdk() as client:
        first, kinds = ask(client, claude.cast.model, stream, thinking=THINKING)
        thinking, text = first.content
        assert (thinking.type, thinking.thinking, text.text) == ("thinking", "".join(words(3)), "".join(words(5)))
        assert claude.fake.claude_signatures.issued[thinking.signature] == thinking.thinking
        if stream:
            assert kinds == ["thinking_delta"] * 3 + ["signature_delta"] + ["text_delta"] * 5
        history = [
            *ASK,
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
            {"role": "user", "content": "Go on."},
        ]
        second, _ = ask(client, claude.cast.model, stream, thinking=THINKING, messages=history)
        assert claude.fake.claude_signatures.verified == [thinking.signature]
        assert claude.sent()["messages"][1]["content"][0] == thinking.model_dump()
        assert second.stop_reason == "end_turn"
        forged = [*history[:1], {"role": "assistant", "content": [{**thinking.model_dump(), "signature": "forged"}]},
                  history[2]]  # fmt: skip
        with pytest.raises(anthropic.BadRequestError) as refused:
            ask(client, claude.cast.model, stream, thinking=THINKING, messages=forged)
    # Claude (the fake) refused the forged signature, which reached it untouched.
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert claude.sent()["messages"][1]["content"][0]["signature"] == "forged"
    assert claude.fake.claude_signatures.verified == [thinking.signature]


@pytest.mark.parametrize("stream", [False, True])
def test_cache_usage_reaches_the_client_and_is_billed(claude, stream):
    claude.fake.scenario.cache_read_tokens = 100
    claude.fake.scenario.cache_write_tokens = 40
    with claude.sdk() as client:
        if stream:
            with client.messages.stream(model=claude.cast.model, max_tokens=100, messages=ASK) as events:
                start = next(event for event in events if event.type == "message_start")
                message = events.get_final_message()
            counts = start.message.usage
            assert (counts.input_tokens, counts.cache_read_input_tokens, counts.cache_creation_input_tokens) == (
                claude.prompt_tokens,
                100,
                40,
            )
        else:
            message, _ = ask(client, claude.cast.model, False)
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        claude.prompt_tokens,
        100,
        40,
    )
    record = claude.cast.record(message.id)
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (
        claude.prompt_tokens + 140,
        100,
        5,
    )


def test_cache_reads_are_priced_at_the_cached_input_price(vertex_casts, fake_vertex):
    model_create(
        "test/claude-cached",
        deployments=[(Vendor.objects.get(name="vertex"), UPSTREAM["claude"], 0, 1)],
        input_price=Decimal("1"),
        output_price=Decimal("2"),
        cached_input_price=Decimal("0.1"),
    )
    fake_vertex.scenario.cache_read_tokens = 100
    fake_vertex.scenario.cache_write_tokens = 40
    cast = vertex_casts["claude"]
    with anthropic.Anthropic(api_key=cast.key, base_url=cast.url, max_retries=0) as client:
        message = client.messages.create(model="test/claude-cached", max_tokens=100, messages=ASK)
    record = cast.record(message.id)
    # Uncached input (31 + 40 written) at 1, 100 read at 0.1, 5 output at 2, per million tokens.
    assert record.cost == (Decimal(71) + Decimal(10) + Decimal(10)) / Decimal(1_000_000)


def test_top_k_reaches_gemini(vertex_casts, fake_vertex):
    cast = vertex_casts["gemini"]
    with anthropic.Anthropic(api_key=cast.key, base_url=cast.url, max_retries=0) as client:
        for stream in (False, True):
            message, _ = ask(client, cast.model, stream, messages=[{"role": "user", "content": "Hi."}], top_k=7)
            assert message.content[0].text == "".join(words(5))
            assert fake_vertex.api_requests[-1].json()["generationConfig"]["topK"] == 7


def test_cancelled_passthrough_stream_closes_the_vendor_and_bills_what_was_delivered(claude):
    claude.fake.scenario.tokens = 50
    claude.fake.scenario.token_delay = 0.2
    received = ""
    with claude.sdk() as client:
        with client.messages.with_streaming_response.create(
            model=claude.cast.model, max_tokens=100, messages=ASK, stream=True, extra_body={"top_k": 3}
        ) as response:
            generation_id = response.headers["x-generation-id"]
            stream = response.parse()
            for event in stream:
                if event.type == "content_block_delta":
                    received += event.delta.text
                if received.count(" ") == 7:
                    break
            stream.close()
            closed = time.monotonic()
    seen = claude.fake.wait_closed(claude.last_request())
    assert seen is not None and seen - closed < CLOSE_BOUND
    assert claude.sent()["top_k"] == 3
    record = claude.cast.record(generation_id)
    assert (record.status, record.completion_tokens, record.tokens_delivered) == ("cancelled", 7, 7)


@pytest.fixture
def claude_then_openai(live_router, fake_vertex, service_account, fake_openai, transactional_db):
    """Model ``test/fallback``: Claude on Vertex first, the fake OpenAI after it."""
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    vertex = vendor_create("vertex", "vertex", fake_vertex.url, options, {"credentials_json": service_account})
    openai = vendor_create("fake", "openai", fake_openai.url, credentials={"api_key": "sk-vendor-secret-for-tests"})
    deployments = [(vertex, UPSTREAM["claude"], 0, 1), (openai, "fake-model", 1, 1)]
    model_create("test/fallback", deployments=deployments, input_price=Decimal("1"), output_price=Decimal("2"))
    api_key, plaintext = api_key_create("tester")
    yield Cast(live_router.url, plaintext, api_key, "test/fallback")
    wait_settled()


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_from_claude_to_openai_goes_through_the_canonical_translation(
    claude_then_openai, fake_vertex, fake_openai, stream
):
    fake_vertex.scenario.status = 529
    fake_openai.scenario.tokens = 4
    cast = claude_then_openai
    earlier = [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
                                          {"type": "text", "text": "Done."}]},
        {"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                     "data": "The report."}, "cache_control": EPHEMERAL},
                                     {"type": "text", "text": "Summarise it."}]},
    ]  # fmt: skip
    with anthropic.Anthropic(api_key=cast.key, base_url=cast.url, max_retries=0) as client:
        message, _ = ask(client, cast.model, stream, messages=earlier, top_k=5, system=SYSTEM)
    assert message.content[0].text == "".join(words(4))
    assert [block.type for block in message.content] == ["text"]
    assert fake_vertex.api_requests[-1].json()["top_k"] == 5  # Claude was asked first, in its format
    sent = fake_openai.last().json()
    assert "top_k" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "Done."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "The report."}, {"type": "text", "text": "Summarise it."}],
        },
    ]
    record = cast.record(message.id)
    assert record.status == "completed"
    assert [attempt["outcome"] for attempt in record.attempts] == ["error", "ok"]

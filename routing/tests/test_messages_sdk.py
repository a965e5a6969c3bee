"""``POST /v1/messages`` with Anthropic's own SDK as the client, over real sockets.

The live router relays to the fake OpenAI vendor: the Messages dialect's whole path (the key in
``x-api-key``, the translation to the canonical request and back, the event stream the SDK
assembles, errors the SDK raises by type) and a cancelled stream's billing.
"""

from __future__ import annotations

import time

import anthropic
import pytest

from fakevendors.openai import words

CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close
ASK = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture
def client(cast):
    with anthropic.Anthropic(api_key=cast.key, base_url=cast.url, max_retries=0, timeout=30) as sdk:
        yield sdk


def test_message_through_the_sdk(client, cast, fake_openai):
    fake_openai.scenario.tokens = 5
    raw = client.messages.with_raw_response.create(model=cast.model, max_tokens=50, messages=ASK)
    message = raw.parse()
    assert message.id == raw.headers["x-generation-id"]
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "".join(words(5))
    assert (message.stop_reason, message.model, message.usage.output_tokens) == ("end_turn", cast.model, 5)
    sent = fake_openai.last().json()
    assert (sent["max_tokens"], sent["messages"]) == (50, ASK)
    record = cast.record(message.id)
    assert (record.status, record.completion_tokens) == ("completed", 5)


def test_stream_through_the_sdk(client, cast, fake_openai):
    fake_openai.scenario.tokens = 6
    with client.messages.stream(model=cast.model, max_tokens=50, messages=ASK, system="Be brief.") as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert message.content[0].text == "".join(words(6))
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 6)
    assert message.usage.input_tokens > 0
    assert fake_openai.last().json()["messages"][0] == {"role": "system", "content": "Be brief."}
    assert cast.record(message.id).status == "completed"


def test_tool_use_round_trip_through_the_sdk(client, cast, fake_openai):
    fake_openai.scenario.tokens = 2
    fake_openai.scenario.tool_call = True
    tools = [{"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object"}}]
    first = client.messages.create(model=cast.model, max_tokens=50, messages=ASK, tools=tools)
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert (use.type, use.name, use.input) == ("tool_use", "get_weather", {"city": "".join(words(2)).strip()})
    follow_up = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny."}]},
    ]
    second = client.messages.create(model=cast.model, max_tokens=50, messages=follow_up, tools=tools)
    assert (second.stop_reason, second.content[0].type) == ("end_turn", "text")
    sent = fake_openai.last().json()["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "Sunny."}
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_errors_reach_the_sdk_as_its_own_exceptions(client, cast):
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no/such-model", max_tokens=5, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=cast.model, max_tokens=5, messages=ASK, extra_body={"top_k": -3})
    assert "top_k" in refused.value.body["error"]["message"]
    with anthropic.Anthropic(api_key="sk-siraya-wrong", base_url=cast.url, max_retries=0) as stranger:
        with pytest.raises(anthropic.AuthenticationError):
            stranger.messages.create(model=cast.model, max_tokens=5, messages=ASK)


def test_error_after_the_stream_began_raises_in_the_sdk(client, cast, fake_openai):
    fake_openai.scenario.tokens = 5
    fake_openai.scenario.error_after = 2
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model=cast.model, max_tokens=50, messages=ASK) as stream:
            for _ in stream:
                pass


def test_cancelled_stream_closes_the_vendor_and_bills_what_was_delivered(client, cast, fake_openai):
    fake_openai.scenario.tokens = 50
    fake_openai.scenario.token_delay = 0.2
    received = ""
    with client.messages.with_streaming_response.create(
        model=cast.model, max_tokens=100, messages=ASK, stream=True
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
    seen = fake_openai.wait_closed(fake_openai.last())
    assert seen is not None and seen - closed < CLOSE_BOUND
    record = cast.record(generation_id)
    assert (record.status, record.completion_tokens, record.tokens_delivered) == ("cancelled", 7, 7)


def test_top_k_is_left_out_for_a_vendor_without_it(client, cast, fake_openai):
    fake_openai.scenario.tokens = 3
    message = client.messages.create(model=cast.model, max_tokens=50, messages=ASK, extra_body={"top_k": 3})
    assert message.content[0].text == "".join(words(3))
    assert "top_k" not in fake_openai.last().json()

"""POST /v1/responses with the official openai SDK against a live router over real sockets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseTextDeltaEvent,
)

from fakevendors.openai import PROMPT_TOKENS, words
from lib import tokens
from routing.dialects.responses.objects import generation_of
from routing.errors import UPSTREAM_MESSAGES

CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close


def client_for(cast, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=cast.url + "/v1", api_key=key or cast.key, max_retries=0)


def test_sdk_create_returns_the_response_object_under_the_generation_id(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    raw = client_for(cast).responses.with_raw_response.create(model=cast.model, input="hi", instructions="Be brief.")
    response = raw.parse()
    # OpenAI's resp_ id; the same request's generation id is gen- and the same part.
    assert response.id == "resp_" + raw.headers["x-generation-id"].removeprefix("gen-")
    assert (response.object, response.status, response.model) == ("response", "completed", cast.model)
    assert response.output_text == "".join(words(3))
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (PROMPT_TOKENS, 3)
    sent = fake_openai.last().json()
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    record = cast.record(generation_of(response.id))
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", PROMPT_TOKENS, 3)


def test_sdk_stream_yields_typed_events_ending_in_completed(cast, fake_openai):
    fake_openai.scenario.tokens = 5
    events = list(client_for(cast).responses.create(model=cast.model, input="hi", stream=True))
    assert isinstance(events[0], ResponseCreatedEvent)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert text == "".join(words(5))
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent)
    assert done.response.output_text == text
    assert done.response.usage is not None and done.response.usage.output_tokens == 5
    assert cast.record(generation_of(done.response.id)).completion_tokens == 5


def test_sdk_stream_helper_accumulates_the_final_response(cast, fake_openai):
    """The SDK's own accumulator checks the event order (a delta before its part is an error)."""
    fake_openai.scenario.tokens = 4
    with client_for(cast).responses.stream(model=cast.model, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "".join(words(4))


def test_sdk_tool_call_round_trip(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    fake_openai.scenario.tool_call = True
    client = client_for(cast)
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    events = list(client.responses.create(model=cast.model, input="Weather?", tools=tools, stream=True))
    (args_done,) = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    (call,) = events[-1].response.output
    assert (call.type, call.call_id, call.name) == ("function_call", "call_fake1", "get_weather")
    assert call.arguments == args_done.arguments == "".join(words(3))
    sent = fake_openai.last().json()
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    follow_up = [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    answer = client.responses.create(model=cast.model, input=follow_up, tools=tools)
    assert answer.output_text == "".join(words(3))  # the fake answers in text once the tool answered
    sent = fake_openai.last().json()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_fake1", "content": "sunny"}


def test_sdk_sees_errors_in_openai_shape(cast, fake_openai):
    with pytest.raises(openai.AuthenticationError):
        client_for(cast, "sk-siraya-wrong").responses.create(model=cast.model, input="hi")
    client = client_for(cast)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no/such-model", input="hi")
    with pytest.raises(openai.BadRequestError, match="Background responses are not supported") as raised:
        client.responses.create(model=cast.model, input="hi", background=True)
    assert raised.value.param == "background"
    with pytest.raises(openai.BadRequestError, match="Built-in tools are not supported"):
        client.responses.create(model=cast.model, input="hi", tools=[{"type": "web_search"}])


def test_sdk_sees_a_mid_stream_failure_as_error_then_response_failed(cast, fake_openai):
    fake_openai.scenario.tokens = 5
    fake_openai.scenario.error_after = 2
    events = list(client_for(cast).responses.create(model=cast.model, input="hi", stream=True))
    error, failed = events[-2:]
    assert isinstance(error, ResponseErrorEvent) and isinstance(failed, ResponseFailedEvent)
    # The router's words for the failure's class, never the vendor's ("fake mid-stream failure").
    assert error.message == UPSTREAM_MESSAGES["upstream_error"]
    assert failed.response.status == "failed" and failed.response.error is not None
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert cast.record(generation_of(failed.response.id)).status == "error"


def test_closing_a_stream_closes_the_vendor_and_bills_what_was_delivered(cast, fake_openai):
    fake_openai.scenario.tokens = 50
    fake_openai.scenario.token_delay = 0.2
    stream = client_for(cast).responses.create(model=cast.model, input="Tell me a long story.", stream=True)
    received, generation_id = "", ""
    for event in stream:
        if isinstance(event, ResponseCreatedEvent):
            generation_id = generation_of(event.response.id)
        if isinstance(event, ResponseTextDeltaEvent):
            received += event.delta
            if received.count(" ") >= 7:
                break
    stream.close()
    closed = time.monotonic()
    request = fake_openai.last()
    seen = fake_openai.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    assert request.tokens_written < 50
    record = cast.record(generation_id)
    assert record.status == "cancelled"
    assert record.completion_tokens == record.tokens_delivered == tokens.count_text(received, "cl100k_base")


@pytest.mark.django_db(transaction=True)
def test_readme_responses_example_runs_verbatim(live_router):
    """The README's Responses example, as written, against the demo vendor."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("demo_setup", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "client.responses.create" in b and "previous_response_id" not in b]
    code = block.replace("http://127.0.0.1:8000", live_router.url)
    env = {**os.environ, "SIRAYA_API_KEY": key}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("resp_") and " completed You said: Hello!" in lines[0]
    assert lines[1] == "You said: Hello!" and lines[2].endswith("out tokens]")

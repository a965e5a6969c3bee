"""POST /v1/responses in process: the request's mapping, the Response object, the event stream,
errors, cancellation and the usage record, with scripted vendors behind the real relay."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lib import tokens
from routing.canonical import PARAMETERS
from routing.dialects.responses.objects import generation_of
from routing.dialects.responses.schema import parse_responses_request
from routing.relay.limits import cut_threshold
from routing.tests.inprocess import Script, answer, answer_text, attempts, cost, failure, role_batch, word_batches
from routing.vendors.base import ChunkEvent, Usage

PATH = "/v1/responses"


def post(relay, stream: bool = False, exchange: dict[str, Any] | None = None, **body: Any):
    body.setdefault("model", "m")
    body.setdefault("input", "Tell me a story.")
    return relay.exchange(orjson.dumps({**body, "stream": stream}), path=PATH, **(exchange or {}))


def events(seen) -> list[dict[str, Any]]:
    """The stream's events, each checked: its ``event:`` line names its type."""
    out = []
    for block in seen.raw.split(b"\n\n"):
        lines = block.split(b"\n")
        if not block or lines[0].startswith(b":"):
            continue
        kind, data = lines[0].removeprefix(b"event: ").decode(), orjson.loads(lines[1].removeprefix(b"data: "))
        assert data["type"] == kind
        out.append(data)
    return out


def kinds(seen) -> list[str]:
    return [event["type"] for event in events(seen)]


def call_chunks(call_id: str, name: str, pieces: list[str], index: int = 0) -> list[list[Any]]:
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    batches: list[list[Any]] = [[ChunkEvent([{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}])]]
    for piece in pieces:
        call = {"index": index, "function": {"arguments": piece}}
        batches.append([ChunkEvent([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])])
    return batches


TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    *["response.output_text.delta"] * 3,
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
]  # fmt: skip


def test_streamed_text_is_the_documented_event_sequence_with_usage(relay):
    relay.deploy("m", Script("v", answer(3, usage=Usage(11, 3))))
    seen = post(relay, stream=True)
    assert seen.status == 200 and seen.headers["content-type"].startswith("text/event-stream")
    got = events(seen)
    assert [e["type"] for e in got] == TEXT_EVENTS
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta") == answer_text(3)
    done = got[-1]["response"]
    response_id = "resp_" + seen.headers["x-generation-id"].removeprefix("gen-")
    assert (done["id"], done["status"], done["model"]) == (response_id, "completed", "m")
    assert done["output"][0]["content"][0]["text"] == answer_text(3)
    assert done["usage"]["input_tokens"] == 11 and done["usage"]["output_tokens"] == 3
    assert done["usage"]["total_tokens"] == 14
    record = relay.record(generation_of(done["id"]))
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", 11, 3)
    assert record.cost == cost(11, 3)


def test_whole_answer_is_the_response_object(relay):
    relay.deploy("m", Script("v", answer(4, usage=Usage(9, 4))))
    seen = post(relay, instructions="Be brief.", metadata={"ticket": "7"})
    body = seen.json()
    response_id = "resp_" + seen.headers["x-generation-id"].removeprefix("gen-")
    assert (body["object"], body["status"], body["id"]) == ("response", "completed", response_id)
    (item,) = body["output"]
    assert (item["type"], item["role"], item["content"][0]["text"]) == ("message", "assistant", answer_text(4))
    assert (body["instructions"], body["metadata"], body["store"]) == ("Be brief.", {"ticket": "7"}, True)
    assert body["usage"]["output_tokens"] == 4
    assert relay.record(generation_of(body["id"])).completion_tokens == 4


def test_input_items_and_parameters_reach_the_vendor_in_the_canonical_request(relay):
    script = Script("v", answer(1))
    relay.deploy("m", script)
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "rain"},
    ]  # fmt: skip
    tool = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
    schema = {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}
    seen = post(
        relay, input=items, instructions="Answer tersely.", tools=[tool], tool_choice={"type": "function", "name": "weather"},
        max_output_tokens=50, temperature=0.3, reasoning={"effort": "low"}, text={"format": schema},
        parallel_tool_calls=False, store=True,
    )  # fmt: skip
    assert seen.status == 200, seen.raw
    request = script.calls[0].request
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert request.messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA=="},
    }
    assert [c["id"] for c in request.messages[2]["tool_calls"]] == ["c1", "c2"]
    assert request.messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert request.max_tokens == 50
    assert request.params == {
        "temperature": 0.3, "parallel_tool_calls": False, "max_completion_tokens": 50,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}}, "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}},
    }  # fmt: skip


def test_streamed_tool_calls_are_function_call_items(relay):
    end = [ChunkEvent([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])]
    batches = [
        role_batch(),
        *call_chunks("call_1", "weather", ['{"ci', 'ty":"Paris"}']),
        *call_chunks("call_2", "time", ["{}"], 1),
        end,
    ]
    relay.deploy("m", Script("v", batches))
    got = events(post(relay, stream=True, tools=[{"type": "function", "name": "weather"}]))
    assert [e["type"] for e in got] == [
        "response.created", "response.in_progress",
        "response.output_item.added", *["response.function_call_arguments.delta"] * 2,
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    first, second = got[-1]["response"]["output"]
    assert (first["type"], first["call_id"], first["name"], first["arguments"]) == (
        "function_call",
        "call_1",
        "weather",
        '{"city":"Paris"}',
    )
    assert (second["call_id"], second["arguments"], second["status"]) == ("call_2", "{}", "completed")
    assert got[-1]["response"]["status"] == "completed"


def test_reasoning_streams_as_a_reasoning_item_before_the_message(relay):
    thought = [
        [ChunkEvent([{"index": 0, "delta": {"reasoning_content": t}, "finish_reason": None}])] for t in ("Hm", "m.")
    ]
    relay.deploy("m", Script("v", [role_batch(), *thought, *answer(2, role=False)]))
    got = events(post(relay, stream=True))
    output = got[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "Hmm."}]
    assert [e["output_index"] for e in got if e["type"] == "response.output_item.added"] == [0, 1]


@pytest.mark.parametrize("stream", [True, False])
def test_length_finish_is_an_incomplete_response(relay, stream):
    relay.deploy("m", Script("v", answer(3, finish="length")))
    seen = post(relay, stream=stream, max_output_tokens=3)
    body = events(seen)[-1]["response"] if stream else seen.json()
    assert (body["status"], body["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    if stream:
        assert kinds(seen)[-1] == "response.incomplete"


@pytest.mark.parametrize("stream", [True, False])
def test_router_cut_past_the_margin_is_incomplete_and_billed_as_delivered(relay, stream):
    relay.deploy("m", Script("v", answer(200)))  # a vendor that ignores the limit
    seen = post(relay, stream=stream, max_output_tokens=5)
    cut = cut_threshold(5)
    if stream:
        got = events(seen)
        assert got[-1]["type"] == "response.incomplete"
        body = got[-1]["response"]
    else:
        body = seen.json()
    assert (body["status"], body["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert body["output"][0]["content"][0]["text"] == answer_text(cut)
    record = relay.only_record()
    assert (record.completion_tokens, record.tokens_delivered, record.finish_reason) == (cut, cut, "length")


def test_error_mid_stream_is_the_error_event_then_response_failed(relay):
    relay.deploy("m", Script("v", [role_batch(), *word_batches(2)], error=failure(500)))
    seen = post(relay, stream=True)
    got = events(seen)
    assert [e["type"] for e in got[-2:]] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))  # one sequence, error included
    assert got[-2]["code"] == "upstream_error"
    failed = got[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_error"
    assert kinds(seen).count("response.created") == 1
    assert relay.only_record().status == "error"


def test_fallback_before_the_first_token_starts_one_sequence(relay):
    broken = Script("broken", [role_batch()], error=failure(503))
    relay.deploy("m", broken, Script("good", answer(2)))
    seen = post(relay, stream=True)
    got = events(seen)
    assert [e["type"] for e in got][:2] == ["response.created", "response.in_progress"]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert got[-1]["type"] == "response.completed"
    assert attempts(relay.only_record()) == [("broken", "error"), ("good", "ok")]


def test_client_leaving_mid_stream_closes_the_vendor_and_bills_what_was_delivered(relay):
    script = Script("talker", answer(50, usage=Usage(11, 50)), delay=0.01)
    relay.deploy("m", script)
    seen = post(relay, stream=True, exchange={"disconnect_after": 7})
    delivered = "".join(e["delta"] for e in events(seen) if e["type"] == "response.output_text.delta")
    assert 0 < len(delivered) < len(answer_text(50)) and script.closed == 1
    record = relay.only_record()
    assert (record.status, record.error_code) == ("cancelled", "client_disconnected")
    assert record.completion_tokens == record.tokens_delivered == tokens.count_text(delivered, "cl100k_base")


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"background": True}, "background", "not supported"),
        ({"previous_response_id": 7}, "previous_response_id", "must be a string"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "Built-in tools"),
        ({"frequency_penalty": 1}, "frequency_penalty", "Unrecognized request argument"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "not supported"),
        ({"input": []}, "input", "non-empty"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "'input[0].content[0].text' must be a string",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "'input_file' are not supported",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            "'input[0].call_id' is required",
        ),
        ({"input": ["hi"]}, "input[0]", "'input[0]' must be an object"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "'tools[0].name' is required"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "is required"),
        ({"max_output_tokens": 0}, "max_output_tokens", "between"),
    ],
)
def test_refused_requests_are_openai_shaped_400s_naming_the_field(relay, body, param, words):
    script = Script("v", answer(1))
    relay.deploy("m", script)
    seen = post(relay, **body)
    assert seen.status == 400
    error = seen.error()
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert words in error["message"]
    assert script.calls == []
    assert relay.only_record().http_status == 400


def test_unknown_model_is_a_404_in_openai_shape(relay):
    seen = post(relay, model="no/such")
    assert seen.status == 404 and seen.error()["code"] == "model_not_found"


def test_failure_after_only_keepalives_is_a_whole_failed_sequence(relay, settings):
    settings.SIRAYA_KEEPALIVE_SECONDS = 0.03
    relay.deploy("m", Script("slow", [], first_delay=0.2, error=failure(500)))
    seen = post(relay, stream=True)
    assert seen.status == 200 and seen.comments()  # the keepalives started the stream
    got = events(seen)
    assert [e["type"] for e in got] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert [e["sequence_number"] for e in got] == [0, 1, 2, 3]
    assert got[-1]["response"]["output"] == []


def test_whole_answer_with_a_tool_call_is_a_function_call_item(relay_openai, fake_openai):
    fake_openai.scenario.tool_call = True
    fake_openai.scenario.tokens = 2
    seen = post(relay_openai, model="test/fake", tools=[{"type": "function", "name": "get_weather"}])
    body = seen.json()
    (call,) = body["output"]
    assert (call["type"], call["call_id"], call["name"], call["status"]) == (
        "function_call",
        "call_fake1",
        "get_weather",
        "completed",
    )
    assert orjson.loads(call["arguments"]) == {"city": answer_text(2).strip()}
    assert body["status"] == "completed" and body["tools"] == [{"type": "function", "name": "get_weather"}]


def test_streamed_refusal_is_a_message_with_a_refusal_part(relay):
    refusal = [[ChunkEvent([{"index": 0, "delta": {"refusal": t}, "finish_reason": None}])] for t in ("I can", "not.")]
    end = [ChunkEvent([{"index": 0, "delta": {}, "finish_reason": "stop"}])]
    relay.deploy("m", Script("v", [role_batch(), *refusal, end]))
    got = events(post(relay, stream=True))
    assert [e["type"] for e in got] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.refusal.delta", "response.refusal.delta", "response.refusal.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    (item,) = got[-1]["response"]["output"]
    assert item["content"] == [{"type": "refusal", "refusal": "I cannot."}]


def test_every_parameter_maps_onto_a_canonical_name():
    """Vendor adapters know the canonical (chat) names only: the dialect sends no other."""
    body = {
        "model": "m", "input": "hi", "max_output_tokens": 9, "temperature": 1, "top_p": 1, "parallel_tool_calls": True,
        "user": "u", "service_tier": "auto", "top_logprobs": 2, "tools": [{"type": "function", "name": "f"}],
        "tool_choice": "required", "reasoning": {"effort": "high"}, "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "metadata": {"a": "b"}, "store": True, "include": [], "truncation": "disabled", "instructions": "x",
    }  # fmt: skip
    request = parse_responses_request(orjson.dumps(body))
    assert set(request.params) <= PARAMETERS
    assert len(request.params) == 12  # every forwarded parameter arrived (metadata and store stay here)


def test_a_previous_answers_output_items_are_accepted_as_input(relay):
    """The SDK pattern ``input += response.output``: items with ids, statuses and reasoning."""
    script = Script("v", answer(1))
    relay.deploy("m", script)
    previous = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Hm."}]},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []},
                     {"type": "refusal", "refusal": "Not that."}]},
        {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "42"}]},
    ]  # fmt: skip
    seen = post(relay, input=[{"role": "user", "content": "Go."}, *previous])
    assert seen.status == 200, seen.raw
    messages = script.calls[0].request.messages
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["content"] == [{"type": "text", "text": "Let me look."}, {"type": "text", "text": "Not that."}]
    assert [call["id"] for call in messages[1]["tool_calls"]] == ["c1"]  # the same assistant turn
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "42"}

"""Bedrock's Converse translation on its own: OpenAI chat requests to Converse, Converse answers back to OpenAI."""

from __future__ import annotations

import pytest

from fakevendors.bedrock import event
from routing.errors import RouterError
from routing.tests.bedrock_helpers import chat, decode
from routing.vendors.base import Usage
from routing.vendors.bedrock.converse import converse_choices, converse_request, usage_from_converse

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
    assert usage == Usage(prompt_tokens=117, completion_tokens=3, cached_tokens=100, cache_write_tokens=7)

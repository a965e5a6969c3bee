"""``POST /v1/messages`` through Anthropic's SDK to each vendor kind other than OpenAI's
(Vertex Gemini, Claude on Vertex, Bedrock), translated through the canonical request."""

from __future__ import annotations

import anthropic
import pytest

from fakevendors.openai import words

ASK = [{"role": "user", "content": "Tell me a story."}]


def sdk(cast):
    return anthropic.Anthropic(api_key=cast.key, base_url=cast.url, max_retries=0, timeout=30)


def assert_streamed_and_whole(cast, expected: str) -> None:
    with sdk(cast) as client:
        with client.messages.stream(model=cast.model, max_tokens=100, messages=ASK, system="Be brief.") as stream:
            kinds = [event.type for event in stream]
            streamed = stream.get_final_message()
        whole = client.messages.create(model=cast.model, max_tokens=100, messages=ASK)
    assert (kinds[0], kinds[-2], kinds[-1]) == ("message_start", "message_delta", "message_stop")
    for message in (streamed, whole):
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].text == expected
        assert message.stop_reason == "end_turn"
        record = cast.record(message.id)
        assert record.status == "completed"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (
            record.prompt_tokens - record.cached_tokens,
            record.completion_tokens,
        )


@pytest.mark.parametrize("dialect", ["gemini", "claude"])
def test_messages_on_vertex(vertex_casts, dialect):
    assert_streamed_and_whole(vertex_casts[dialect], "".join(words(5)))


def test_messages_on_bedrock(bedrock):
    cast, _ = bedrock(tokens=4)
    assert_streamed_and_whole(cast, "".join(words(4)))

"""POST /v1/responses on every vendor kind (each kind's fake over real sockets), with the openai SDK."""

from __future__ import annotations

import openai
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

from routing.dialects.responses.objects import generation_of
from routing.tests.test_vendor_answers import setup  # noqa: F401  (the per-kind fixture)

PROMPT = "Tell me a long story about a cat."


def test_every_vendor_kind_answers_a_responses_stream_and_a_whole_response(setup):  # noqa: F811
    cast = setup.cast
    client = openai.OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)
    events = list(client.responses.create(model=cast.model, input=PROMPT, stream=True))
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent), events[-3:]
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert text and done.response.output_text == text
    assert done.response.usage is not None and done.response.usage.output_tokens > 0
    record = cast.record(generation_of(done.response.id))
    assert (record.status, record.completion_tokens) == ("completed", done.response.usage.output_tokens)
    assert record.prompt_tokens == done.response.usage.input_tokens
    whole = client.responses.create(model=cast.model, input=PROMPT, instructions="Be brief.")
    assert whole.status == "completed" and whole.output_text
    assert (
        whole.usage is not None and cast.record(generation_of(whole.id)).completion_tokens == whole.usage.output_tokens
    )

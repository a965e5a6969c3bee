"""Stored responses with the official openai SDK against a live router over real sockets:
retrieve, input items, delete, ``previous_response_id``, and what another key sees."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import openai
import pytest
from django.core.management import call_command
from openai.types.responses import ResponseCompletedEvent

from billing.services import api_key_create
from fakevendors.openai import words
from routing.dialects.responses.objects import generation_of
from routing.models import StoredResponse


def client_for(cast, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=cast.url + "/v1", api_key=key or cast.key, max_retries=0)


def test_sdk_retrieves_lists_and_deletes_a_stored_response(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    client = client_for(cast)
    created = client.responses.create(model=cast.model, input="hi", instructions="Be brief.")
    # Asked the moment the answer arrived: the response is there (stored before its usage record is settled).
    fetched = client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    assert fetched.output_text == "".join(words(3)) and fetched.store is True
    items = client.responses.input_items.list(created.id)
    (item,) = items.data
    assert (item.type, item.role, item.content[0].text) == ("message", "user", "hi")
    assert items.has_more is False and items.first_id == items.last_id == item.id
    assert client.responses.delete(created.id) is None  # the SDK returns nothing for a deletion
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_sdk_continues_a_streamed_turn_with_previous_response_id(cast, fake_openai):
    fake_openai.scenario.tokens = 2
    client = client_for(cast)
    events = list(client.responses.create(model=cast.model, input="Hello", stream=True))
    first = events[-1]
    assert isinstance(first, ResponseCompletedEvent)
    second = client.responses.create(model=cast.model, input="And then?", previous_response_id=first.response.id)
    assert second.previous_response_id == first.response.id
    sent = fake_openai.last().json()["messages"]
    assert sent == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "".join(words(2))}]},
        {"role": "user", "content": "And then?"},
    ]
    assert cast.record(generation_of(second.id)).prompt_tokens == second.usage.input_tokens
    # The second response's input items: the first turn's input and output, then its own.
    listed = client.responses.input_items.list(second.id, order="asc")
    assert [item.id for item in listed.data][:2] == [
        f"msg_{first.response.id.removeprefix('resp_')}_in0",
        first.response.output[0].id,
    ]
    paged = list(client.responses.input_items.list(second.id, limit=1))  # the SDK follows the pages
    assert [item.id for item in paged] == [item.id for item in reversed(listed.data)]


def test_sdk_another_key_and_unstored_responses_are_not_found(cast, fake_openai):
    fake_openai.scenario.tokens = 2
    client = client_for(cast)
    kept = client.responses.create(model=cast.model, input="mine")
    other = client_for(cast, api_key_create("someone else")[1])
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(kept.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError) as raised:
        other.responses.create(model=cast.model, input="yours?", previous_response_id=kept.id)
    assert raised.value.code == "previous_response_not_found" and raised.value.param == "previous_response_id"
    assert client.responses.retrieve(kept.id).id == kept.id  # its own key still sees it
    unstored = client.responses.create(model=cast.model, input="forget me", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=cast.model, input="again", previous_response_id=unstored.id)


@pytest.mark.django_db(transaction=True)
def test_readme_stored_responses_example_runs_verbatim(live_router):
    """The README's stored-responses example, as written, against the demo vendor."""
    out = StringIO()
    call_command("demo_setup", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "previous_response_id" in b]
    code = block.replace("http://127.0.0.1:8000", live_router.url)
    env = {**os.environ, "SIRAYA_API_KEY": key}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["You said: Still there?", "You said: Hello!"]
    assert [line.split(" ", 1)[1] for line in lines[2:]] == [
        "user Hello!",
        "assistant You said: Hello!",
        "user Still there?",
    ]
    assert StoredResponse.objects.count() == 1  # the first was deleted

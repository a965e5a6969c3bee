"""Real clients: the official openai SDK and the README's requests example."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from fakevendors.openai import words


def test_openai_sdk_streaming(cast, fake_openai):
    fake_openai.scenario.tokens = 5
    client = openai.OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)
    stream = client.chat.completions.create(
        model=cast.model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(words(5))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert all(c.model == cast.model and c.id.startswith("gen-") for c in chunks)


def test_openai_sdk_non_streaming(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    client = openai.OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)
    completion = client.chat.completions.create(model=cast.model, messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "".join(words(3))
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    models = client.models.list()
    assert [m.id for m in models.data] == [cast.model]


def test_openai_sdk_sees_errors_as_exceptions(cast, fake_openai):
    client = openai.OpenAI(base_url=cast.url + "/v1", api_key="sk-siraya-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=cast.model, messages=[{"role": "user", "content": "hi"}])
    client = openai.OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "hi"}])
    fake_openai.scenario.error_after = 1
    with pytest.raises(openai.APIError, match="fake mid-stream failure"):
        for _ in client.chat.completions.create(
            model=cast.model, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


def test_readme_requests_example(cast, fake_openai):
    """The quick start's streaming example, verbatim but for the URL and key."""
    fake_openai.scenario.tokens = 4
    url = cast.url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {cast.key}"}
    body = {"model": cast.model, "messages": [{"role": "user", "content": "Hello!"}], "stream": True}
    printed = []
    with requests.post(url, headers=headers, json=body, stream=True, timeout=60) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: "):
                continue  # blank separators and ": Siraya Model Router PROCESSING" keepalives
            data = line[len("data: ") :]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk["choices"]:
                printed.append(choice["delta"].get("content") or "")
    assert "".join(printed) == "".join(words(4))

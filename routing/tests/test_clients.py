"""Real clients: the official openai SDK and the README's requests example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from fakevendors.openai import words
from routing.errors import UPSTREAM_MESSAGES


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
    # The router's words for the failure's class, never the vendor's ("fake mid-stream failure").
    with pytest.raises(openai.APIError, match=re.escape(UPSTREAM_MESSAGES["upstream_error"])) as raised:
        for _ in client.chat.completions.create(
            model=cast.model, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    assert "fake mid-stream failure" not in str(raised.value)


def readme_python_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.django_db(transaction=True)
def test_readme_examples_run_verbatim(live_router):
    """The quick start's two Python examples, as written, against the demo vendor."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("demo_setup", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    env = {**os.environ, "SIRAYA_API_KEY": key}
    for block in blocks[:2]:
        code = block.replace("http://127.0.0.1:8000", live_router.url)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        assert "You said: Hello!" in result.stdout

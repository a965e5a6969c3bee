"""Vertex AI end to end, failures: vendor errors before and during the stream, cut streams, blocked prompts.

``vertex_casts`` (``routing/tests/conftest.py``) routes ``test/gemini`` and ``test/claude`` to
one Vertex vendor with a service-account key the fake trusts.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from fakevendors.openai import words
from routing.errors import UPSTREAM_MESSAGES
from routing.tests.sse_client import content_of
from routing.tests.vendor_cast import sse_chunks
from routing.tests.vertex_helpers import PROMPT, warm_up


@pytest.fixture(params=["gemini", "claude"])
def dialect(request):
    return request.param


@pytest.fixture
def cast(vertex_casts, dialect):
    """The dialect's model on the fake Vertex (in this module, instead of the root conftest's OpenAI cast)."""
    return vertex_casts[dialect]


@pytest.mark.parametrize("stream", [True, False])
def test_vendor_error_before_first_token_keeps_status_and_code(cast, dialect, fake_vertex, stream):
    warm_up(cast)
    fake_vertex.scenario.status = 429 if dialect == "gemini" else 529
    response = cast.chat(stream=stream)
    expected_status, expected_code = (429, "upstream_rate_limited") if dialect == "gemini" else (502, "upstream_error")
    assert response.status_code == expected_status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == expected_code and error["message"] == UPSTREAM_MESSAGES[expected_code]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", expected_status, Decimal(0))
    assert "Vendor 'vertex' returned HTTP" in record.error_message
    vendor_code = "RESOURCE_EXHAUSTED" if dialect == "gemini" else "overloaded_error"
    assert record.attempts[0]["vendor_code"] == vendor_code


def test_mid_stream_error_ends_with_error_chunk(cast, dialect, fake_vertex):
    fake_vertex.scenario.error_after = 2
    response = cast.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(2))
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == "upstream_error"
    record = cast.record(response.headers["x-generation-id"])
    assert record.attempts[0]["vendor_code"] == ("UNAVAILABLE" if dialect == "gemini" else "overloaded_error")
    assert (record.status, record.completion_tokens) == ("error", 2)
    assert record.prompt_tokens == PROMPT[dialect]  # reported before the failure


def test_stream_cut_without_a_finish_is_an_error(cast, dialect, fake_vertex):
    fake_vertex.scenario.cut_after = 3
    response = cast.chat(stream=True)
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(3))
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert chunks[-1]["error"]["code"] == "upstream_truncated"
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 3)


@pytest.mark.parametrize("stream", [True, False])
def test_blocked_gemini_prompt_is_a_400_content_filter(vertex_casts, fake_vertex, stream):
    warm_up(vertex_casts["gemini"])
    fake_vertex.scenario.block_prompt = "PROHIBITED_CONTENT"
    response = vertex_casts["gemini"].chat(stream=stream)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter" and "PROHIBITED_CONTENT" in error["message"]
    record = vertex_casts["gemini"].record(response.headers["x-generation-id"])
    assert (record.status, record.error_code) == ("error", "content_filter")

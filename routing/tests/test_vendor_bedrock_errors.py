"""The Bedrock adapter end to end, failures: vendor errors before and during the stream, bad frames, cut streams.

The fake checks every request's SigV4 signature (or bearer key) and answers 403 when it is
wrong, so every 200 here also proves the router signed exactly what it sent. The ``bedrock``
fixture (``routing/tests/conftest.py``) starts a fake and routes a model and a key to it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from fakevendors.openai import words
from routing.errors import UPSTREAM_MESSAGES
from routing.tests.sse_client import content_of
from routing.tests.vendor_cast import sse_chunks


def test_throttling_before_the_stream_is_429_with_retry_after(bedrock):
    cast, _ = bedrock(status=429, error_type="ThrottlingException", retry_after="3")
    response = cast.chat(stream=True)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    error = response.json()["error"]
    assert error["code"] == "upstream_rate_limited" and error["type"] == "rate_limit_error"
    assert error["message"] == UPSTREAM_MESSAGES["upstream_rate_limited"]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", 429, Decimal(0))
    assert "Too many requests" in record.error_message  # the vendor's words are the operator's
    assert record.attempts[0]["vendor_code"] == "throttlingException"


def test_validation_error_before_the_stream_is_400(bedrock):
    cast, _ = bedrock(status=400, error_type="ValidationException", error_message="temperature: bad value")
    response = cast.chat(stream=True)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_invalid_request"
    assert "temperature: bad value" not in response.text
    assert "temperature: bad value" in cast.record(response.headers["x-generation-id"]).error_message


@pytest.mark.parametrize(
    ("exception_type", "status", "code"),
    [("throttlingException", 429, "upstream_rate_limited"), ("validationException", 400, "upstream_invalid_request"),
     ("serviceUnavailableException", 502, "upstream_error")],
)  # fmt: skip
def test_exception_event_before_the_first_token_sets_the_status(bedrock, exception_type, status, code):
    cast, _ = bedrock(exception_after=0, exception_type=exception_type, exception_message="no luck")
    response = cast.chat(stream=True)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "no luck" not in response.text
    record = cast.record(response.headers["x-generation-id"])
    assert "no luck" in record.error_message and record.attempts[0]["vendor_code"] == exception_type


def test_mid_stream_exception_event_becomes_the_error_chunk(bedrock):
    cast, _ = bedrock(tokens=8, exception_after=3)
    response = cast.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(3))
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == "upstream_error"
    assert last["error"]["message"] == UPSTREAM_MESSAGES["upstream_error"]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.error_code, record.completion_tokens) == ("error", "upstream_error", 3)
    assert "The model stream failed." in record.error_message
    assert record.attempts[0]["vendor_code"] == "modelStreamErrorException"


def test_frame_with_a_bad_crc_is_an_upstream_error(bedrock):
    cast, fake = bedrock(tokens=8, bad_crc_after=2)
    response = cast.chat(stream=True)
    chunks = sse_chunks(response.text)
    assert "".join(content_of(c) for c in chunks) == "".join(words(2))
    assert chunks[-1]["error"]["code"] == "upstream_malformed"
    assert chunks[-1]["error"]["message"] == UPSTREAM_MESSAGES["upstream_malformed"]
    # The router is fine afterwards.
    fake.scenario.bad_crc_after = None
    assert "".join(content_of(c) for c in sse_chunks(cast.chat(stream=True).text)) == "".join(words(8))


def test_stream_cut_before_message_stop_is_an_error(bedrock):
    cast, _ = bedrock(tokens=8, truncate_after=4)
    response = cast.chat(stream=True)
    chunks = sse_chunks(response.text)
    assert chunks[-1]["error"]["code"] == "upstream_malformed"
    assert "ended before messageStop" in cast.record(response.headers["x-generation-id"]).error_message

"""The Bedrock adapter end to end, cancellation: a client's close reaches the vendor, delivered tokens are billed.

The fake checks every request's SigV4 signature (or bearer key) and answers 403 when it is
wrong, so every 200 here also proves the router signed exactly what it sent. The ``bedrock``
fixture (``routing/tests/conftest.py``) starts a fake and routes a model and a key to it.
"""

from __future__ import annotations

import time
from decimal import Decimal

from lib import tokens
from routing.tests.bedrock_helpers import generation_of
from routing.tests.sse_client import RawStream, content_of
from routing.tests.vendor_cast import CLOSE_BOUND, MESSAGES


def test_cancel_mid_stream_closes_vendor_and_bills_delivered_tokens(bedrock):
    cast, fake = bedrock(tokens=50, token_delay=0.25)
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    received = ""
    while received.count(" ") < 7:
        received += content_of(stream.next_data())
    closed = stream.close()
    request = fake.last()
    seen = fake.wait_closed(request)
    assert seen is not None, "the vendor never saw the client's close"
    assert seen - closed < CLOSE_BOUND
    assert request.tokens_written < 50
    record = cast.record(stream.headers["x-generation-id"])
    assert record.status == "cancelled"
    assert record.completion_tokens == 7 == tokens.count_text(received, "cl100k_base") == record.tokens_delivered
    # Bedrock reports usage only in its last event: the prompt was counted by the router.
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (None, None)
    assert record.usage_source == "router"
    assert record.cost == Decimal(record.prompt_tokens * 1 + 7 * 2) / 1_000_000


def test_cancel_before_first_token_closes_vendor(bedrock):
    cast, fake = bedrock(first_token_delay=5.0)
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    request = fake.last()
    time.sleep(0.2)
    closed = stream.close()
    seen = fake.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    assert request.tokens_written == 0
    record = cast.record(generation_of(cast))
    assert (record.status, record.completion_tokens, record.cost) == (
        "cancelled",
        0,
        Decimal(record.prompt_tokens) / 1_000_000,
    )
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")

"""The Bedrock adapter end to end, signing: SigV4 over ARN paths and session tokens, bearer API keys, refusals.

The fake checks every request's SigV4 signature (or bearer key) and answers 403 when it is
wrong, so every 200 here also proves the router signed exactly what it sent. The ``bedrock``
fixture (``routing/tests/conftest.py``) starts a fake and routes a model and a key to it.
"""

from __future__ import annotations

from urllib.parse import quote

from fakevendors.bedrock import ACCESS_KEY_ID, API_KEY
from fakevendors.openai import words
from routing.tests.bedrock_helpers import SIGV4
from routing.tests.sse_client import content_of
from routing.tests.vendor_cast import sse_chunks


def test_arn_model_id_is_one_signed_path_segment(bedrock):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"
    cast, fake = bedrock(upstream=arn, tokens=2)
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    request = fake.last()
    assert request.path == f"/model/{quote(arn, safe='')}/converse-stream"
    assert request.path.count("/") == 3
    assert fake.model_ids == [arn] and fake.auth_failures == []
    assert cast.chat().status_code == 200  # Converse too
    assert fake.model_ids == [arn, arn] and fake.auth_failures == []


def test_session_token_is_signed(bedrock):
    cast, fake = bedrock(
        credentials={**SIGV4, "aws_session_token": "FwoGZXIvYXdzEFAKE//token=="},
        session_token="FwoGZXIvYXdzEFAKE//token==",
    )
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    assert fake.last().headers["x-amz-security-token"] == "FwoGZXIvYXdzEFAKE//token=="
    assert "x-amz-security-token" in fake.last().headers["authorization"]
    assert fake.auth_failures == []


def test_missing_session_token_is_rejected_by_the_vendor(bedrock):
    cast, fake = bedrock(session_token="FwoGZXIvYXdzEFAKE//token==")
    response = cast.chat(stream=True)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert fake.auth_failures == ["session token missing or wrong"]


def test_wrong_secret_is_a_clear_502_without_the_secret(bedrock):
    wrong = "wrong/secret+key000000000000000000000000"
    cast, fake = bedrock(credentials={**SIGV4, "aws_secret_access_key": wrong})
    response = cast.chat(stream=True)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "vendor_auth_failed"
    assert "rejected the router's credentials" in error["message"]
    assert wrong not in response.text and ACCESS_KEY_ID not in response.text
    assert fake.auth_failures == ["signature mismatch"]
    record = cast.record(response.headers["x-generation-id"])
    assert wrong not in record.error_message


def test_api_key_is_sent_as_bearer(bedrock):
    cast, fake = bedrock(credentials={"api_key": API_KEY}, api_key=API_KEY, tokens=3)
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    assert "".join(content_of(c) for c in sse_chunks(response.text)) == "".join(words(3))
    request = fake.last()
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-amz-date" not in request.headers
    assert cast.chat().status_code == 200


def test_wrong_api_key_is_rejected(bedrock):
    cast, fake = bedrock(credentials={"api_key": "ABSK-not-the-key"}, api_key=API_KEY)
    response = cast.chat()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert "ABSK-not-the-key" not in response.text
    assert fake.auth_failures == ["bad API key"]

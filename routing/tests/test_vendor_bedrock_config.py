"""Bedrock's signing and configuration on their own: SigV4 over what is sent, HTTP errors, the endpoint, the vendor command."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
import pytest
from botocore.credentials import Credentials
from django.core.management import call_command

from fakevendors.bedrock import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, sigv4_problem
from fakevendors.server import RecordedRequest
from routing.errors import UPSTREAM_MESSAGES
from routing.models import Vendor
from routing.tests.bedrock_helpers import chat, config
from routing.vendors.base import UpstreamCall
from routing.vendors.bedrock import BedrockAdapter


def test_signed_request_verifies_and_any_change_breaks_it():
    adapter = BedrockAdapter(config(base_url="http://127.0.0.1:9"))
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc:1"
    request = adapter.request(UpstreamCall(chat(), arn, "gen-1"), stream=True)
    assert (
        request.url.raw_path
        == b"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc%3A1/converse-stream"
    )
    received = RecordedRequest(
        "POST", request.url.path, {}, {k.lower(): v for k, v in request.headers.items()}, request.content,
        raw_target=request.url.raw_path.decode(),
    )  # fmt: skip
    credentials = Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    now = datetime.now(UTC)
    assert sigv4_problem(received, credentials, REGION, now) is None
    received.body = request.content.replace(b"hi", b"ho")
    assert sigv4_problem(received, credentials, REGION, now) == "signature mismatch"
    received.body = request.content
    received.raw_target = received.raw_target.replace("abc", "abd")
    assert sigv4_problem(received, credentials, REGION, now) == "signature mismatch"
    received.raw_target = request.url.raw_path.decode()
    assert sigv4_problem(received, Credentials(ACCESS_KEY_ID, "other"), REGION, now) == "signature mismatch"


@pytest.mark.parametrize(
    ("status", "error_type", "body", "client_status", "code", "vendor_code", "text"),
    [
        (424, "ModelErrorException", {"message": "model broke"}, 502, "upstream_error", "modelErrorException",
         "model broke"),
        (408, "ModelTimeoutException", {"message": "slow"}, 504, "upstream_timeout", "modelTimeoutException", "slow"),
        (503, "ServiceUnavailableException", {"Message": "busy"}, 502, "upstream_error",
         "serviceUnavailableException", "busy"),
        (500, "", {}, 502, "upstream_error", "upstream_500", "returned HTTP 500"),
        (403, "UnrecognizedClientException", {"Message": "The security token is invalid."}, 502,
         "vendor_auth_failed", None, "rejected the router's credentials (HTTP 403 UnrecognizedClientException)"),
    ],
)  # fmt: skip
def test_http_errors_map_by_status_and_error_type(status, error_type, body, client_status, code, vendor_code, text):
    headers = httpx.Headers(
        {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/"} if error_type else {}
    )
    error = BedrockAdapter(config()).on_error(status, orjson.dumps(body), headers)
    assert (error.status, error.code, error.vendor_code, error.vendor_status) == (
        client_status, code, vendor_code, status
    )  # fmt: skip
    assert text in error.detail and error.message == UPSTREAM_MESSAGES[code]


def test_default_base_url_is_the_regional_runtime_endpoint():
    adapter = BedrockAdapter(config())
    assert adapter.url("amazon.nova-lite-v1:0", stream=False) == (
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse"
    )


@pytest.mark.parametrize(
    ("options", "credentials", "message"),
    [
        ({}, {"api_key": "k"}, "--region is required"),
        ({"region": "moon"}, {"api_key": "k"}, "not an AWS region"),
        ({"region": "us-east-1"}, {}, "needs --aws-access-key-id and --aws-secret-access-key"),
        ({"region": "us-east-1"}, {"aws_access_key_id": "A"}, "needs --aws-access-key-id"),
        ({"region": "us-east-1"}, {"aws_session_token": "T"}, "needs --aws-access-key-id"),
        ({"region": "us-east-1"}, {"api_key": "k", "aws_access_key_id": "A"}, "not both"),
    ],
)
def test_validate_gives_one_line_errors(options, credentials, message):
    with pytest.raises(ValueError, match=message) as caught:
        BedrockAdapter.validate("", options, credentials)
    assert "\n" not in str(caught.value)


@pytest.mark.django_db
def test_vendor_add_command_stores_aws_credentials_encrypted():
    call_command(
        "vendor", "add", "aws", "--kind", "bedrock", "--region", "eu-central-1",
        "--aws-access-key-id", "AKIAEXAMPLE", "--aws-secret-access-key", "s3cr3t/KEY",
        "--aws-session-token", "T0KEN",
    )  # fmt: skip
    vendor = Vendor.objects.get(name="aws")
    assert (vendor.kind, vendor.options, vendor.base_url) == ("bedrock", {"region": "eu-central-1"}, "")
    assert vendor.credentials() == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "s3cr3t/KEY",
        "aws_session_token": "T0KEN",
    }
    assert "s3cr3t" not in vendor.credentials_encrypted and "T0KEN" not in vendor.credentials_encrypted
    call_command("vendor", "add", "aws-key", "--kind", "bedrock", "--region", "us-west-2", "--api-key", "ABSKkey")
    assert Vendor.objects.get(name="aws-key").credentials() == {"api_key": "ABSKkey"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aws-access-key-id", "A", "--aws-secret-access-key", "S"], "--region is required"),
        (["--region", "us-east-1"], "needs --aws-access-key-id"),
        (["--region", "us-east-1", "--aws-access-key-id", "A"], "needs --aws-access-key-id"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_vendor_add_bedrock_misconfigured_is_one_line(args, message):
    from routing.tests.test_commands import manage

    result = manage("vendor", "add", "aws", "--kind", "bedrock", *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_manage_help_lists_bedrock_options():
    from routing.tests.test_commands import manage

    result = manage("vendor", "add", "--help")
    for flag in ("--region", "--aws-access-key-id", "--aws-secret-access-key", "--aws-session-token"):
        assert flag in result.stdout

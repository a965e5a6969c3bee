"""AWS Bedrock Runtime: ``ConverseStream`` and ``Converse``, signed with SigV4 or a Bedrock API key.

A request that came in Claude's own format, answered by a Claude model, goes through
``InvokeModelWithResponseStream`` / ``InvokeModel`` in that format instead (``bedrock.invoke``);
embeddings go through ``InvokeModel`` (``bedrock.embeddings``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import (
    Completion,
    EmbeddingCall,
    Embeddings,
    OptionSpec,
    SettingProblem,
    StreamEvent,
    UpstreamCall,
    VendorAdapter,
    VendorConfig,
)
from routing.vendors.bedrock import embeddings
from routing.vendors.bedrock.converse import converse_choices, converse_request, usage_from_converse
from routing.vendors.bedrock.events import ConverseStreamDecoder, exception_error, malformed
from routing.vendors.bedrock.invoke import InvokeStreamDecoder, invoke_body, uses_invoke
from routing.vendors.claude_messages import completion as claude_completion

# botocore logs each canonical request at DEBUG, session token included: keep that out of any log.
logging.getLogger("botocore.auth").setLevel(logging.INFO)

REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
KEY_PAIR = ("aws_access_key_id", "aws_secret_access_key")


def runtime_url(base_url: str, region: str) -> str:
    """The Bedrock Runtime root: the operator's base URL, or the region's public endpoint."""
    return (base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")


class BedrockAdapter(VendorAdapter):
    kind = "bedrock"
    option_names = ("region",)
    secret_names: ClassVar[tuple[str, ...]] = ("api_key", *KEY_PAIR, "aws_session_token")
    serves_embeddings = True  # Titan and Cohere embedding models through InvokeModel
    option_specs: ClassVar[Mapping[str, OptionSpec]] = {"region": OptionSpec(help="The AWS region, e.g. us-east-1.")}
    base_url_help = (
        "Blank uses the region's endpoint (https://bedrock-runtime.REGION.amazonaws.com); "
        "set it only for a VPC endpoint or a proxy."
    )

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        found: list[SettingProblem] = []
        region = options.get("region")
        if not region:
            found.append(SettingProblem("region", "{region} is required for a Bedrock vendor (for example us-east-1)"))
        elif not isinstance(region, str) or not REGION.fullmatch(region):
            found.append(SettingProblem("region", "{region} is not an AWS region name (for example us-east-1)"))
        if base_url and not base_url.startswith(("https://", "http://")):
            found.append(SettingProblem("base_url", "{base_url} must start with https://"))
        signing = [name for name in (*KEY_PAIR, "aws_session_token") if credentials.get(name)]
        if credentials.get("api_key"):
            if signing:
                message = "give a Bedrock vendor either {api_key} or AWS keys, not both"
                found.append(SettingProblem("api_key", message))
        elif not all(credentials.get(name) for name in KEY_PAIR):
            message = (
                "a Bedrock vendor needs {aws_access_key_id} and {aws_secret_access_key} "
                "(and {aws_session_token} for temporary keys), or a Bedrock {api_key}"
            )
            missing = [name for name in KEY_PAIR if not credentials.get(name)]
            found.extend(SettingProblem(name, message) for name in missing)
        return found

    @classmethod
    def destinations(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[tuple[str, str]]:
        return [("base_url" if base_url else "region", runtime_url(base_url, str(options.get("region", ""))))]

    def __init__(self, vendor: VendorConfig) -> None:
        super().__init__(vendor)
        region = str(vendor.options.get("region", ""))
        self.base_url = runtime_url(vendor.base_url, region)
        secrets = vendor.credentials
        self.api_key: str | None = secrets.get("api_key") or None
        # Built once per vendor configuration; signing a request is then a few HMACs and one SHA-256.
        self.signer: SigV4Auth | None = None
        if self.api_key is None:
            credentials = Credentials(
                secrets.get("aws_access_key_id", ""),
                secrets.get("aws_secret_access_key", ""),
                secrets.get("aws_session_token") or None,
            )
            self.signer = SigV4Auth(credentials, SERVICE, region)

    def url(self, model_id: str, stream: bool, invoke: bool = False) -> str:
        if invoke:
            return self.operation_url(model_id, "invoke-with-response-stream" if stream else "invoke")
        return self.operation_url(model_id, "converse-stream" if stream else "converse")

    def operation_url(self, model_id: str, operation: str) -> str:
        # One path segment, whatever the id holds: ARNs carry ':' and '/'.
        return f"{self.base_url}/model/{quote(model_id, safe='')}/{operation}"

    def request(self, call: UpstreamCall, stream: bool) -> httpx.Request:
        invoke = uses_invoke(call)
        url = self.url(call.upstream_model, stream, invoke)
        payload = invoke_body(call) if invoke else converse_request(call.request, call.max_output_tokens)
        body = http.json_bytes(payload)
        accept = "application/vnd.amazon.eventstream" if stream else "application/json"
        return self.post(url, body, accept)

    def post(self, url: str, body: bytes, accept: str = "application/json") -> httpx.Request:
        """Return the POST of ``body`` to ``url``, authorised with the API key or signed with SigV4."""
        headers = {"content-type": "application/json", "accept": accept}
        if self.signer is None:
            headers["authorization"] = f"Bearer {self.api_key}"
        else:
            headers = self.sign(url, body, headers)
        return httpx.Request("POST", url, content=body, headers=headers)

    def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """Return ``headers`` plus the SigV4 ones for exactly this URL and body."""
        signed = AWSRequest(method="POST", url=url, data=body, headers=headers)
        assert self.signer is not None
        self.signer.add_auth(signed)
        return dict(signed.headers.items())

    def on_error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        """Bedrock errors: ``{"message": ...}`` and the exception name in ``x-amzn-ErrorType``."""
        error_type = headers.get("x-amzn-errortype", "").split(":", 1)[0].strip()
        if status in (401, 403):
            kind = f" {error_type}" if error_type else ""
            return UpstreamError(
                502,
                f"Vendor '{self.vendor.name}' rejected the router's credentials (HTTP {status}{kind}).",
                code="vendor_auth_failed",
                vendor_status=status,
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        message, _ = http.error_message(payload)
        if not message and isinstance(payload, dict) and payload.get("Message"):
            message = str(payload["Message"])[:300]  # some AWS front ends capitalise it
        error = exception_error(self.vendor.name, error_type, message) if error_type else None
        client_status = http.vendor_status_to_client(status)
        retry_after = http.retry_after_seconds(headers)
        text = (
            error.detail
            if error
            else f"Vendor '{self.vendor.name}' returned HTTP {status}" + (f": {message}" if message else ".")
        )
        result = UpstreamError(
            client_status,
            text,
            code=(error.vendor_code if error else None) or f"upstream_{status}",
            retryable=status in http.RETRYABLE_STATUSES,
            retry_after=retry_after,
            vendor_status=status,
        )
        if retry_after is not None and client_status == 429:
            result.headers["Retry-After"] = str(math.ceil(retry_after))
        return result

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        request = self.request(call, stream=True)
        decoder: ConverseStreamDecoder | InvokeStreamDecoder = (
            InvokeStreamDecoder(self.vendor.name) if uses_invoke(call) else ConverseStreamDecoder(self.vendor.name)
        )
        async with http.open_response(self.vendor, request, self.on_error) as response:
            async for data in response.aiter_raw():
                batch: list[StreamEvent] = []
                try:
                    batch.extend(decoder.feed(data))
                except UpstreamError:
                    if batch:
                        yield batch  # good frames that shared the read with the failure come first
                    raise
                if batch:
                    yield batch
            decoder.finish()

    async def complete(self, call: UpstreamCall) -> Completion:
        request = self.request(call, stream=False)
        async with http.open_response(self.vendor, request, self.on_error) as response:
            payload = await http.read_json(self.vendor, response)
        if uses_invoke(call):
            return claude_completion(self.vendor.name, payload, native=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("output"), dict):
            raise malformed(self.vendor.name, "an answer without output")
        return Completion(converse_choices(payload), usage_from_converse(payload.get("usage"), self.vendor.name))

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        return await embeddings.embed(self, call)

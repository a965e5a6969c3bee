"""A fake AWS Bedrock Runtime: ``Converse`` JSON and ``ConverseStream`` event-stream frames,
Claude's own format through ``InvokeModel`` (the message JSON) and ``InvokeModelWithResponseStream``
(each of Claude's stream events, base64, in the ``bytes`` of a ``chunk`` frame), and ``InvokeModel``
for embedding models (``fakevendors.bedrock_embeddings``).

Frames are real ``application/vnd.amazon.eventstream`` messages with CRC32 checksums, built
here from the format (prelude, headers, payload, message CRC). Every request must carry a
valid SigV4 signature for the fake's credentials (recomputed with botocore from what was
received) or, in API-key mode, the right bearer key; otherwise the fake answers 403 as
Bedrock does and records why in ``auth_failures``.

Text comes one word per event from ``fakevendors.openai.WORDS`` (one token each), so a test
knows exactly how many tokens were written and delivered.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakevendors import claude as native
from fakevendors.bedrock_embeddings import Refused, invoke
from fakevendors.bedrock_invoke import ClaudeInvoke
from fakevendors.eventstream import chunk, corrupt, event, exception, frame
from fakevendors.openai import honoured, own_count, words
from fakevendors.server import Connection, FakeServer, RecordedRequest

__all__ = ["FakeBedrock", "Scenario", "chunk", "corrupt", "event", "exception", "frame", "sigv4_problem"]

PROMPT_TOKENS = 23  # what this fake reports as input tokens, whatever the prompt
ACCESS_KEY_ID = "AKIAFAKEBEDROCK00001"
SECRET_ACCESS_KEY = "fake/bedrock+secret/key0000000000000000000"
REGION = "us-east-1"
API_KEY = "ABSKfake-bedrock-api-key-for-tests"
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)
PATH = re.compile(r"/model/(?P<model>[^/]+)/(?P<operation>converse|converse-stream|invoke|invoke-with-response-stream)")


# -- SigV4 verification ------------------------------------------------------------------------


def sigv4_problem(request: RecordedRequest, credentials: Credentials, region: str, now: datetime) -> str | None:
    """Return why ``request`` is not validly signed with ``credentials``, or None when it is."""
    match = AUTHORIZATION.fullmatch(request.headers.get("authorization", ""))
    if match is None:
        return "no SigV4 authorization header"
    amz_date = request.headers.get("x-amz-date", "")
    if match["key"] != credentials.access_key:
        return "unknown access key id"
    if (match["region"], match["service"], match["date"]) != (region, "bedrock", amz_date[:8]):
        return "wrong credential scope"
    signed_names = match["headers"].split(";")
    for required in ("host", "x-amz-date", "content-type"):
        if required not in signed_names:
            return f"{required} is not signed"
    if credentials.token and (
        "x-amz-security-token" not in signed_names or request.headers.get("x-amz-security-token") != credentials.token
    ):
        return "session token missing or wrong"
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "bad x-amz-date"
    if abs((now - signed_at).total_seconds()) > 300:
        return "signature expired"
    headers = {name: request.headers.get(name, "") for name in signed_names}
    url = f"http://{request.headers.get('host', '')}{request.raw_target}"
    rebuilt = AWSRequest(method=request.method, url=url, data=request.body, headers=headers)
    rebuilt.context["timestamp"] = amz_date
    signer = SigV4Auth(credentials, "bedrock", region)
    if signer.signed_headers(signer.headers_to_sign(rebuilt)) != match["headers"]:
        return "signed header list does not match"
    expected = signer.signature(signer.string_to_sign(rebuilt, signer.canonical_request(rebuilt)), rebuilt)
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature mismatch"
    return None


# -- the fake --------------------------------------------------------------------------------


@dataclass
class Scenario:
    tokens: int = 5
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    # Fail before the stream: HTTP status, x-amzn-ErrorType and message.
    status: int = 200
    error_type: str = "ThrottlingException"
    error_message: str = "Too many requests, please wait before trying again."
    retry_after: str | None = None
    # Send this exception event after this many words (0: before any text).
    exception_after: int | None = None
    exception_type: str = "modelStreamErrorException"
    exception_message: str = "The model stream failed."
    # Corrupt the CRC of the event after this many words.
    bad_crc_after: int | None = None
    # Close the stream after this many words without messageStop.
    truncate_after: int | None = None
    # Answer with a toolUse, unless the conversation already carries a toolResult.
    tool_call: bool = False
    # Reasoning words streamed before the text.
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # Claude's own format only (InvokeModel)
    # Split every write into pieces of this many bytes (frames cut anywhere).
    split_bytes: int | None = None
    # Respect inferenceConfig.maxTokens (a bad vendor ignores it), counting with a tokenizer of
    # this many router tokens per token of its own, in which it also reports usage
    # (see ``fakevendors.openai.honoured`` and ``own_count``).
    honour_max_tokens: bool = True
    tokenizer_ratio: float = 1.0
    # Fields that replace the reported usage's (a broken vendor: {"inputTokens": -5}).
    usage_override: dict[str, Any] | None = None
    # InvokeModel calls answered before ``status`` applies (a failure part way through a batch).
    invocations_before_failure: int = 0


class FakeBedrock(ClaudeInvoke, FakeServer):
    def __init__(
        self,
        *,
        api_key: str | None = None,
        access_key_id: str = ACCESS_KEY_ID,
        secret_access_key: str = SECRET_ACCESS_KEY,
        session_token: str | None = None,
        region: str = REGION,
        **scenario: Any,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.credentials = Credentials(access_key_id, secret_access_key, session_token)
        self.region = region
        self.scenario = Scenario(**scenario)
        self.auth_failures: list[str] = []
        self.model_ids: list[str] = []
        self.prompt_tokens = PROMPT_TOKENS
        self.claude_signatures = native.Signatures()  # issued with Claude's thinking (InvokeModel)
        self.invocations = 0  # InvokeModel calls received

    def auth_problem(self, request: RecordedRequest) -> str | None:
        if self.api_key is not None:
            expected = f"Bearer {self.api_key}"
            return None if hmac.compare_digest(request.headers.get("authorization", ""), expected) else "bad API key"
        return sigv4_problem(request, self.credentials, self.region, datetime.now(UTC))

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        match = PATH.fullmatch(request.path)  # still percent-encoded
        if request.method != "POST" or match is None:
            self._error(conn, 404, "UnknownOperationException", "Unknown operation")
            return
        problem = self.auth_problem(request)
        if problem is not None:
            self.auth_failures.append(problem)
            if self.api_key is not None:
                self._error(conn, 403, "AccessDeniedException", "Authentication failed: invalid API key.")
            else:
                self._error(
                    conn, 403, "InvalidSignatureException", "The request signature we calculated does not match."
                )
            return
        model_id = unquote(match["model"])
        self.model_ids.append(model_id)
        body = request.json()
        s = self.scenario
        invoked = match["operation"] == "invoke"
        self.invocations += invoked
        if s.status != 200 and not (invoked and self.invocations <= s.invocations_before_failure):
            if await conn.pause(s.first_token_delay):
                headers = {"Retry-After": s.retry_after} if s.retry_after else {}
                self._error(conn, s.status, s.error_type, s.error_message, headers)
            return
        if invoked and "embed" in model_id:  # Titan and Cohere embedding models
            await self._embed(conn, s, model_id, body)
            return
        if match["operation"].startswith("invoke"):
            await self._invoke(request, conn, body, model_id, match["operation"] != "invoke")
            return
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        count = honoured(s.tokens, limit, s.tokenizer_ratio, s.honour_max_tokens)
        tool = s.tool_call and not _has_tool_result(body)
        if match["operation"] == "converse-stream":
            await self._stream(request, conn, s, count, tool)
        else:
            await self._converse(request, conn, s, count, tool)

    def _error(
        self, conn: Connection, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        conn.send_json(
            status,
            {"message": message},
            {
                "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                **(headers or {}),
            },
        )

    async def _embed(self, conn: Connection, s: Scenario, model_id: str, body: Any) -> None:
        try:
            answer, input_tokens = invoke(model_id, body)
        except Refused as refused:
            self._error(conn, refused.status, refused.error_type, refused.message)
            return
        if await conn.pause(s.first_token_delay):
            conn.send_json(200, answer, {"X-Amzn-Bedrock-Input-Token-Count": str(input_tokens),
                                         "X-Amzn-Bedrock-Invocation-Latency": "42", "x-amzn-RequestId": "fake-request-id"})  # fmt: skip

    def _usage(self, s: Scenario, count: int) -> dict[str, Any]:
        count = own_count(count, s.tokenizer_ratio)  # reported in its own tokens
        usage = {
            "inputTokens": PROMPT_TOKENS,
            "outputTokens": count + s.reasoning_tokens,
            "totalTokens": PROMPT_TOKENS + count + s.reasoning_tokens,
        }
        if s.cache_read_tokens:
            usage["cacheReadInputTokens"] = s.cache_read_tokens
            usage["cacheWriteInputTokens"] = 0
        return {**usage, **(s.usage_override or {})}

    async def _converse(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int, tool: bool) -> None:
        if not await conn.pause(s.first_token_delay + s.token_delay * count):
            return
        content: list[dict[str, Any]] = []
        if s.reasoning_tokens:
            content.append(
                {
                    "reasoningContent": {
                        "reasoningText": {"text": "".join(words(s.reasoning_tokens)), "signature": "sig"}
                    }
                }
            )
        if tool:
            content.append(
                {
                    "toolUse": {
                        "toolUseId": "tooluse_fake1",
                        "name": "get_weather",
                        "input": {"city": "".join(words(count)).strip()},
                    }
                }
            )
        else:
            content.append({"text": "".join(words(count))})
        stop = "tool_use" if tool else ("max_tokens" if count < s.tokens else "end_turn")
        request.tokens_written = count
        conn.send_json(
            200,
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "usage": self._usage(s, count),
                "metrics": {"latencyMs": 42},
            },
        )

    def _write(self, conn: Connection, data: bytes, s: Scenario) -> bool:
        if not s.split_bytes:
            return conn.write(data)
        return all(conn.write(data[i : i + s.split_bytes]) for i in range(0, len(data), s.split_bytes))

    def _pieces(self, count: int, tool: bool) -> list[bytes]:
        """The content events, one word each."""
        block = 0
        if not tool:
            return [
                event("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": w}}) for w in words(count)
            ]
        fragments = ['{"city": "', *[w.replace('"', "") for w in words(count)], '"}']
        fragments[1] = fragments[1].lstrip()
        return [
            event("contentBlockDelta", {"contentBlockIndex": block, "delta": {"toolUse": {"input": f}}})
            for f in fragments
        ]

    async def _stream(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int, tool: bool) -> None:
        if not await conn.pause(s.first_token_delay):
            return
        conn.send_head(
            200, {"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": "fake-request-id"}
        )
        opening = event("messageStart", {"role": "assistant"})
        if tool:
            opening += event(
                "contentBlockStart",
                {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_fake1", "name": "get_weather"}}},
            )
        if not self._write(conn, opening, s):
            return
        for w in words(s.reasoning_tokens):
            if not self._write(
                conn,
                event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": w}}}),
                s,
            ):
                return
        for i, piece in enumerate(self._pieces(count, tool)):
            if i and not await conn.pause(s.token_delay):
                return
            if s.exception_after == i:
                self._write(conn, exception(s.exception_type, s.exception_message), s)
                conn.end()
                return
            if s.truncate_after == i:
                conn.end()
                return
            if not self._write(conn, corrupt(piece) if s.bad_crc_after == i else piece, s):
                return
            request.tokens_written += 1
        stop = "tool_use" if tool else ("max_tokens" if count < s.tokens else "end_turn")
        tail = event("contentBlockStop", {"contentBlockIndex": 0}) + event("messageStop", {"stopReason": stop})
        tail += event("metadata", {"usage": self._usage(s, count), "metrics": {"latencyMs": 42}})
        self._write(conn, tail, s)
        conn.end()


def _has_tool_result(body: dict[str, Any]) -> bool:
    return any(
        "toolResult" in block for message in body.get("messages") or () for block in message.get("content") or ()
    )

"""``POST /v1/chat/completions`` as a plain ASGI handler.

It runs beside Django's view stack (see ``siraya_site.asgi``) so that it can watch the
client's connection for the whole request and keep the hot path free of synchronous
middleware. Database work happens in two calls per request: admission (opens the usage
record) and settlement (closes it), each one synchronous function off the event loop.

Cancellation: a watcher task waits for ``http.disconnect``; when it comes, it cancels the
request task. The cancellation runs through the vendor adapter's ``finally`` blocks, which
close the upstream response and its connection, and the usage record is settled with the
text the client had been sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.conf import settings

from billing.counting import ask_counted, outcome_counted, outcome_counted_here
from billing.credit import Ask
from billing.models import UsageStatus
from billing.ratelimit import RateCharge, rate_limit_acquire
from billing.selectors import KeyInfo, api_key_cached, api_key_check, api_key_load, authorization_hash
from billing.services import (
    Admission,
    Outcome,
    request_admit,
    request_reject,
    usage_record_finalize,
)
from billing.streams import stream_slot_acquire
from billing.writer import group_committed
from lib import tokens
from lib.ids import generation_id
from lib.redisclient import RedisUnavailable
from ops import logs, metrics
from routing.canonical import ChatRequest
from routing.dialects.chat.schema import parse_chat_request
from routing.errors import RouterError, UpstreamError, limiter_unavailable
from routing.health import cooldowns
from routing.relay import edge, lifecycle, wire
from routing.relay.checkpoint import DeliveryMeter, choice_token_limit, clip_answer, limit_counts_reasoning
from routing.relay.flow import ClientStalled, Deadline, StallGuard
from routing.selection import attempt_plan, fallback_allowed, provider_vendors
from routing.selectors import ModelRoute, Target
from routing.vendors import adapter_for, http
from routing.vendors.base import ChunkEvent, StreamEvent, UpstreamCall, Usage

logger = logging.getLogger("siraya.relay")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Both writes of a request go through the group commit (billing.writer).
_admit = group_committed(request_admit)
_finalize = group_committed(usage_record_finalize)
_load_key = database_sync_to_async(api_key_load)
_reject = group_committed(request_reject)


_rng = random.Random()


class ClientGone(Exception):
    """The client disconnected while the request body was being read."""


class Relay:
    """One chat completion request, from body to settled usage record."""

    # One per open stream: slots keep each a few hundred bytes smaller than a __dict__ would.
    __slots__ = (
        "_send", "answer_started", "attempts", "cancel_reason", "current", "cut", "delivered", "disconnected",
        "finish_reason", "first_token_at", "generation_id", "last_send", "loop", "meter", "rate",
        "receive", "scope", "started", "t0", "task", "usage",
    )  # fmt: skip

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        """``headers`` go on the response whatever it is (HSTS: ``routing.relay.edge``)."""
        self.scope = scope
        self.receive = receive
        self._send = StallGuard(send, settings.SIRAYA_CLIENT_STALL_SECONDS, self.note_stalled, headers)
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.generation_id: str | None = None
        self.started = False  # response headers sent: errors now go in-band
        self.disconnected = False
        # Why the router cancelled this request itself: client_disconnected, client_stalled, server_shutdown.
        self.cancel_reason = ""
        self.task: asyncio.Task[Any] | None = None
        self.meter: DeliveryMeter | None = None
        self.last_send = self.t0
        self.first_token_at: float | None = None
        self.delivered: list[str] = []
        self.usage = Usage()
        self.cut = False  # the answer was cut at max_tokens (the vendor ignored it): billed for what was delivered
        self.finish_reason = ""
        self.answer_started = False  # a byte of the answer reached the client: no more fallbacks
        self.current: tuple[ModelRoute, Target] | None = None
        self.attempts: list[dict[str, Any]] = []
        self.rate: RateCharge | None = None

    @property
    def status(self) -> int:
        """The response's HTTP status, once its headers are sent (0 before)."""
        return self._send.status

    # -- the request, start to end --------------------------------------------------------

    async def run(self) -> None:
        try:
            # The key first: a request with a bad key costs no body read, however large its body.
            key = await self.authenticate()
            body = await self.read_body()
        except ClientGone:
            return
        except RouterError as error:
            # Refused before its body was read to the end: the connection cannot carry another request.
            error.headers.setdefault("connection", "close")
            await self.send_error(error)
            return
        except Exception:
            # A bug, not the client's fault; still an OpenAI-shaped answer, never a dropped connection.
            logger.exception("relay failed before admission")
            await self.send_error(RouterError(500, "The router failed to read this request.", code="router_error"))
            return
        # From here the caller is known: whatever happens leaves exactly one usage record.
        self.generation_id = generation_id()
        logs.generation_id.set(self.generation_id)
        admitting = False
        model_name = ""
        try:
            request = parse_chat_request(body)
            del body  # the parsed request holds what is needed; the raw body need not live as long as the stream
            model_name = request.model
            vendors = provider_vendors(request.provider)
            ask = Ask(request.messages, request.params.get("tools"), request.max_tokens, request.max_tokens_only)
            ask = await ask_counted(key, request.model, ask)  # before admission: never in the writer
            try:
                self.rate, ask = await rate_limit_acquire(key, request.model, ask, self.generation_id)
            except RedisUnavailable as unavailable:  # the limiter fails closed
                raise limiter_unavailable(unavailable) from None
            admitting = True  # request_admit records its own refusals
            admission = await _admit(
                key, request.model, request.stream, self.generation_id, ask, request.models[1:], vendors
            )
        except RouterError as error:
            if self.rate is not None:
                await self.rate.settle(0)  # refused at admission: it used no tokens
            if not admitting:
                await _reject(key, self.generation_id, model_name, error)
            await self.send_error(error)
            return
        except Exception:
            # A router bug (or, say, vendor credentials that no longer decrypt): still one usage
            # record and an OpenAI-shaped answer.
            logger.exception("relay failed before admission")
            failure = RouterError(500, "The router failed to admit this request.", code="router_error")
            if self.rate is not None:
                await self.rate.settle(0)
            try:
                await _reject(key, self.generation_id, model_name, failure)
            except Exception:
                logger.exception("could not record the failed request")
            await self.send_error(failure)
            return
        try:
            slot = await stream_slot_acquire(key.id, key.max_concurrent_streams) if request.stream else None
        except RouterError as error:
            await self.refuse(request, admission, error)
            return
        except RedisUnavailable as unavailable:  # the cap fails closed
            await self.refuse(request, admission, limiter_unavailable(unavailable))
            return
        except Exception:
            logger.exception("relay failed taking a stream slot")
            await self.refuse(
                request, admission, RouterError(500, "The router failed to admit this request.", code="router_error")
            )
            return
        try:
            await self.serve(request, admission)
        finally:
            if slot is not None:
                await asyncio.shield(slot.release())

    async def refuse(self, request: ChatRequest, admission: Admission, error: RouterError) -> None:
        """Answer an admitted request that may not run after all (stream cap, its limiter down); settle its record.

        Nothing reached a vendor: no tokens are billed and the hold is released. A refusal that is
        the router's fault (5xx) also gives the key back its rate-limit charge.
        """
        outcome = Outcome(status=UsageStatus.ERROR, http_status=error.status, error_code=error.code or "")
        outcome.error_message, outcome.messages = error.message, request.messages
        outcome.encoding = admission.route.encoding
        outcome.prompt_tokens = 0
        given_back = self.rate if error.status >= 500 else None
        if given_back is not None:
            self.rate = None  # released whole below, not corrected
        await self.settle(admission.record_id, outcome)
        if given_back is not None:
            await given_back.release()
        await self.send_error(error)

    async def read_body(self) -> bytes:
        """The request body, refused over its limit (413) or when it takes too long to arrive (408)."""
        limit = settings.SIRAYA_MAX_BODY_BYTES
        if edge.declared_length(self.scope) > limit:
            raise edge.too_large(limit)
        parts: list[bytes] = []
        size = 0
        seconds = settings.SIRAYA_BODY_READ_SECONDS
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    part = message.get("body", b"")
                    size += len(part)
                    if size > limit:
                        raise edge.too_large(limit)
                    parts.append(part)
                    if not message.get("more_body", False):
                        return b"".join(parts)
        except TimeoutError:
            raise edge.too_slow(seconds) from None

    async def authenticate(self) -> KeyInfo:
        authorization = ""
        for name, value in self.scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        key_hash = authorization_hash(authorization)
        hit, info = api_key_cached(key_hash)
        if not hit:
            info = await _load_key(key_hash)
        return api_key_check(info)

    async def serve(self, request: ChatRequest, admission: Admission) -> None:
        """Relay an admitted request; whatever happens, settle its usage record exactly once."""
        task = self.task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self.watch_disconnect(task))
        lifecycle.track(self, task)
        if request.stream:  # a JSON answer is delivered whole or not at all: nothing to meter
            first = admission.route.targets[0]
            self.meter = DeliveryMeter(
                admission.record_id, request, first, admission.route.encoding, self.vendor_prompt_tokens
            )
        outcome = Outcome(status=UsageStatus.COMPLETED, messages=request.messages, tools=request.params.get("tools"))
        if request.stream:
            metrics.STREAMS_OPEN.inc()
        try:
            await self.relay(request, admission)
            outcome.http_status = 200
        except asyncio.CancelledError:
            outcome.status = UsageStatus.CANCELLED
            outcome.error_code = self.cancel_reason or "server_shutdown"
            outcome.http_status = 503 if outcome.error_code == "server_shutdown" else 499
            if not (self.cancel_reason and task.uncancel() == 0):
                raise
            if self.cancel_reason == "server_shutdown":
                await self.fail(RouterError(503, "The router is shutting down.", code="server_shutdown"), admission)
        except ClientStalled:
            outcome.status, outcome.error_code, outcome.http_status = UsageStatus.CANCELLED, "client_stalled", 499
        except RouterError as error:
            outcome.status = UsageStatus.ERROR
            outcome.http_status = error.status
            # The record keeps the operator's account (the vendor's words, redacted); the client, error.message.
            detail = error.detail if isinstance(error, UpstreamError) else error.message
            outcome.error_code, outcome.error_message = error.code or "", detail
            await self.fail(error, admission)
        except Exception:
            logger.exception("relay failed", extra={"generation_id": self.generation_id})
            failure = RouterError(500, "The router failed while relaying this request.", code="router_error")
            outcome.status = UsageStatus.ERROR
            outcome.http_status, outcome.error_code, outcome.error_message = 500, "router_error", failure.message
            await self.fail(failure, admission)
        finally:
            watcher.cancel()
            self._send.close()
            if request.stream:
                metrics.STREAMS_OPEN.dec()
            if self.meter is not None:
                self.meter.close()
            try:
                self.fill_outcome(outcome, admission)
                if self.rate is None and outcome_counted_here(outcome):
                    # The write is queued here; shielding its future keeps it awaited through a cancel.
                    cost = await asyncio.shield(_finalize(admission.record_id, outcome))
                else:
                    cost = await asyncio.shield(self.settle(admission.record_id, outcome))
                self.observe(outcome, admission, cost)
            finally:
                lifecycle.untrack(self)

    def vendor_prompt_tokens(self) -> int | None:
        return self.usage.prompt_tokens

    async def settle(self, record_id: int, outcome: Outcome) -> Decimal:
        await outcome_counted(outcome)  # before the write is queued: never in the writer
        cost = await _finalize(record_id, outcome)
        if self.rate is not None:
            await self.rate.settle(outcome.billed_tokens)
        return cost

    def observe(self, outcome: Outcome, admission: Admission, cost: Any) -> None:
        if outcome.status == UsageStatus.CANCELLED:
            metrics.cancelled(outcome.error_code)
        first = None if outcome.first_token_ms is None else outcome.first_token_ms / 1000
        metrics.generation_settled(
            (self.current or (admission.route,))[0].name,
            outcome.vendor_name,
            outcome.status,
            outcome.billed_prompt_tokens,
            outcome.billed_completion_tokens,
            cost,
            first,
            (outcome.duration_ms or 0) / 1000,
        )

    def fill_outcome(self, outcome: Outcome, admission: Admission) -> None:
        route, target = self.current or (admission.route, None)
        outcome.encoding = route.encoding
        outcome.answered_by = route if route is not admission.route else None
        outcome.vendor_prompt_tokens = self.usage.prompt_tokens
        outcome.vendor_completion_tokens = self.usage.completion_tokens
        outcome.cached_tokens = self.usage.cached_tokens
        outcome.reasoning_tokens = self.usage.reasoning_tokens
        outcome.delivered_text = "".join(self.delivered)
        outcome.cut_at_limit = self.cut
        outcome.finish_reason = self.finish_reason
        outcome.attempts = self.attempts
        if target is not None:
            outcome.deployment_id = target.deployment_id
            outcome.vendor_id, outcome.vendor_name = target.vendor.id, target.vendor.name
            outcome.upstream_model = target.upstream_model
        outcome.duration_ms = int((self.loop.time() - self.t0) * 1000)
        if self.first_token_at is not None:
            outcome.first_token_ms = int((self.first_token_at - self.t0) * 1000)

    async def watch_disconnect(self, task: asyncio.Task[Any]) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.stop("client_disconnected")
                return

    def note_stalled(self) -> None:
        self.disconnected = True
        self.cancel_reason = self.cancel_reason or "client_stalled"

    def stop(self, reason: str) -> None:
        """Cancel this request from inside the router (the client left, stalled, or the server stops)."""
        if self.task is not None and not self.cancel_reason:
            self.cancel_reason = reason
            self.task.cancel(reason)

    # -- deployments and fallbacks ----------------------------------------------------------

    async def relay(self, request: ChatRequest, admission: Admission) -> None:
        """Try the planned deployments in turn until one answers.

        Another deployment is tried only while nothing of the answer has reached the client:
        the client never gets two vendors' text spliced together.
        """
        store = cooldowns()
        routes = admission.routes or (admission.route,)
        ids = [t.deployment_id for r in routes for t in r.targets]
        # One deployment is tried whether it is cooling or not: no cooldown lookup for it.
        cooling = await store.cooling(ids) if len(ids) > 1 else set()
        plan = attempt_plan(routes, request.provider, cooling, _rng)
        keepalive = asyncio.create_task(self.keep_alive()) if request.stream else None
        try:
            for number, (route, target) in enumerate(plan, 1):
                self.current = (route, target)
                if self.meter is not None:
                    self.meter.target = target  # checkpoints name the deployment now answering
                began = self.loop.time()
                try:
                    if request.stream:
                        await self.stream(request, admission, route, target)
                    else:
                        await self.complete(request, admission, route, target)
                except UpstreamError as error:
                    error.detail = http.vendor_text(error.detail, target.vendor)  # before it is kept anywhere
                    self.attempts.append(self.attempt_record(target, began, error))
                    if not fallback_allowed(error):
                        raise  # the request itself is at fault, not the deployment
                    retry_after = error.retry_after if error.vendor_status == 429 else None
                    await store.record_failure(target.deployment_id, retry_after)
                    if self.answer_started or number == len(plan):
                        raise
                    self.usage, self.finish_reason = Usage(), ""
                    continue
                except asyncio.CancelledError:
                    self.attempts.append(self.attempt_record(target, began, None, "cancelled"))
                    raise
                self.attempts.append(self.attempt_record(target, began, None, "ok"))
                return
        finally:
            if keepalive is not None:
                keepalive.cancel()

    def attempt_record(
        self, target: Target, began: float, error: UpstreamError | None, outcome: str = "error"
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "deployment": target.deployment_id,
            "vendor": target.vendor.name,
            "upstream_model": target.upstream_model,
            "outcome": outcome,
            "latency_ms": int((self.loop.time() - began) * 1000),
        }
        if error is not None:
            record.update(
                status=error.status,
                vendor_status=error.vendor_status,
                code=error.code,
                vendor_code=error.vendor_code,
                message=error.detail,
            )
            logger.warning(
                "vendor attempt failed: %s",
                error.detail,
                extra={"generation_id": self.generation_id, "vendor": target.vendor.name, "code": error.code,
                       "vendor_code": error.vendor_code, "vendor_status": error.vendor_status},
            )  # fmt: skip
        return record

    # -- streaming ------------------------------------------------------------------------

    async def stream(self, request: ChatRequest, admission: Admission, route: ModelRoute, target: Target) -> None:
        vendor = target.vendor
        call = UpstreamCall(request, target.upstream_model, admission.generation_id, route.max_output_tokens)
        batches = adapter_for(vendor).stream(call)
        gid, created, name = admission.generation_id, admission.created, route.name
        meter = self.meter
        assert meter is not None
        # Chunks that carry nothing of the answer yet (the role chunk) wait here, so that a
        # failure before the first real token can still fall back to another deployment.
        held: list[bytes] = []
        # One vendor deadline, moved forward by each batch once the answer has started.
        deadline = Deadline(vendor.first_byte_timeout)
        idle = vendor.idle_timeout
        try:
            async for batch in batches:
                exhausted = await self.relay_batch(batch, held, meter, gid, created, name)
                # While the next read is awaited, the stream keeps no parsed chunk alive (memory
                # per held-open stream).
                batch.clear()
                if exhausted:
                    break
                if self.answer_started:
                    deadline.move(self.loop.time() + idle)
        except asyncio.CancelledError:
            if deadline.expired_here():
                phase = "the first token" if self.first_token_at is None else "the next token"
                raise UpstreamError(
                    504,
                    f"Vendor '{vendor.name}' timed out waiting for {phase}.",
                    code="upstream_timeout",
                    retryable=True,
                    note=f"waiting for {phase}",
                ) from None
            raise
        finally:
            deadline.close()
            await batches.aclose()  # type: ignore[attr-defined]
        tail = b"".join(held)
        if request.include_usage:
            usage = self.usage_for_client(request, route)
            tail += wire.sse(wire.chunk(gid, created, name, [], {"usage": usage}))
        await self.send_chunk(tail + wire.DONE, more=False)

    async def relay_batch(
        self, batch: list[StreamEvent], held: list[bytes], meter: DeliveryMeter, gid: str, created: int, name: str
    ) -> bool:
        """Hand one vendor read's chunks to the client in one write; return True at the token limit.

        Chunks that carry nothing of the answer yet (the role chunk) wait in ``held``, so that a
        failure before the first real token can still fall back to another deployment. Once the
        answer has started and no token limit applies (most chunks of most streams), a chunk
        costs its text, its finish reason and its rewrite, and no object of its own.
        """
        out: list[bytes] = []
        texts: list[str] = []
        count = 0
        finish = ""
        exhausted = False
        plain = meter.limit is None
        for event in batch:
            if type(event) is not ChunkEvent:
                self.usage = self.usage.merge(event.usage)  # type: ignore[union-attr]
                continue
            choices = event.choices
            if plain and self.answer_started:
                text = wire.delivered_text(choices)
                if text:
                    texts.append(text)
                finish = wire.finish_reason(choices) or finish
                out.append(wire.sse(wire.chunk(gid, created, name, choices, event.extra)))
                continue
            piece = meter.piece(choices) if plain else await meter.measure(choices)
            exhausted = piece.exhausted
            if not piece.text and exhausted:
                data = b""
            else:
                data = wire.sse(wire.chunk(gid, created, name, piece.choices, event.extra))
            if not self.answer_started and not exhausted:
                if not wire.carries_answer(piece.choices, piece.text):
                    held.append(data)
                    continue
            self.answer_started = True
            if held:
                out += held
                held.clear()
            if data:
                out.append(data)
                count += piece.tokens
                if piece.text:
                    texts.append(piece.text)
                finish = wire.finish_reason(piece.choices) or finish
            if exhausted:  # the vendor ignored max_tokens: stop here, close upstream
                self.finish_reason = "length"
                self.cut = True  # billed for what was delivered, whatever the vendor reported so far
                out.append(wire.sse(wire.chunk(gid, created, name, meter.length_choices())))
                break
        if out:
            await self.send_chunk(b"".join(out))
            self.note_delivered(texts, count, finish)
        return exhausted

    async def send_chunk(self, data: bytes, more: bool = True) -> None:
        if not self.started:
            await self.start_stream()
        await self._send(wire.body(data, more))
        self.last_send = self.loop.time()

    async def start_stream(self) -> None:
        self.started = True
        headers = [*wire.SSE_HEADERS, (b"x-generation-id", (self.generation_id or "").encode())]
        if self.rate is not None:
            headers += self.rate.headers()
        await self._send(wire.start(200, headers))

    def note_delivered(self, texts: list[str], tokens_counted: int, finish: str) -> None:
        """Note what one write handed to the client: its text, counted tokens and finish reason."""
        if self.disconnected:
            return
        self.delivered += texts
        if finish:
            self.finish_reason = finish
        if self.first_token_at is None:
            self.first_token_at = self.loop.time()
        if self.meter is not None:
            self.meter.delivered(tokens_counted, texts if self.meter.limit is None else None)

    async def keep_alive(self) -> None:
        """Send an SSE comment whenever nothing was sent for the keepalive interval."""
        interval = settings.SIRAYA_KEEPALIVE_SECONDS
        while True:
            wait = self.last_send + interval - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.send_chunk(wire.KEEPALIVE)
            except ClientStalled:
                if self.task is not None:
                    self.task.cancel("client_stalled")
                return

    def usage_for_client(self, request: ChatRequest, route: ModelRoute) -> dict[str, Any]:
        encoding = route.encoding
        prompt = self.usage.prompt_tokens
        if prompt is None:
            prompt = tokens.count_messages(request.messages, encoding, request.params.get("tools"))
        completion = None if self.cut else self.usage.completion_tokens
        if completion is None:
            completion = tokens.count_text("".join(self.delivered), encoding)
        return wire.usage_body(prompt, completion, self.usage.cached_tokens, self.usage.reasoning_tokens)

    # -- one JSON body ----------------------------------------------------------------------

    async def complete(self, request: ChatRequest, admission: Admission, route: ModelRoute, target: Target) -> None:
        vendor = target.vendor
        call = UpstreamCall(request, target.upstream_model, admission.generation_id, route.max_output_tokens)
        try:
            async with asyncio.timeout(vendor.first_byte_timeout):
                completion = await adapter_for(vendor).complete(call)
        except TimeoutError:
            raise UpstreamError(
                504, f"Vendor '{vendor.name}' timed out.", code="upstream_timeout", retryable=True
            ) from None
        if completion.usage is not None:
            self.usage = completion.usage
        choices = self.within_max_tokens(request, route, target, completion.choices)
        payload: dict[str, Any] = {
            "id": admission.generation_id,
            "object": "chat.completion",
            "created": admission.created,
            "model": route.name,
            "choices": choices,
        }
        if completion.extra:
            payload.update(completion.extra)
        text = wire.delivered_text(choices)
        self.delivered.append(text)
        payload["usage"] = self.usage_for_client(request, route)
        self.delivered.clear()  # nothing is delivered until the body is sent
        headers = [*wire.JSON_HEADERS, (b"x-generation-id", admission.generation_id.encode())]
        if self.rate is not None:
            headers += self.rate.headers()
        self.started = self.answer_started = True
        await self._send(wire.start(200, headers))
        await self._send(wire.body(orjson.dumps(payload)))
        if not self.disconnected:
            self.delivered.append(text)
        self.first_token_at = self.loop.time()
        for choice in choices:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def within_max_tokens(
        self, request: ChatRequest, route: ModelRoute, target: Target, choices: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A JSON answer's choices, each cut if the vendor ignored the client's ``max_tokens``
        (the router's count passes the limit by more than the tokenizer margin, ``clip_answer``).

        Counted only when the vendor's own figure is missing or over the limit (a vendor that
        honours ``max_tokens`` costs nothing here); a cut answer is billed for what it delivers,
        as a cut stream is."""
        limit = choice_token_limit(request)
        if limit is None:
            return choices
        reported = self.usage.completion_tokens
        if reported is not None and reported <= limit:
            return choices
        clipped = clip_answer(choices, limit, route.encoding, limit_counts_reasoning(request, target))
        if clipped is None:
            return choices
        self.cut = True
        return clipped

    # -- errors ---------------------------------------------------------------------------

    async def fail(self, error: RouterError, admission: Admission) -> None:
        if self.disconnected:
            return
        if self.started:
            name = (self.current or (admission.route,))[0].name
            await self._send(wire.body(wire.error_chunk(admission.generation_id, admission.created, name, error)))
        else:
            await self.send_error(error)

    async def send_error(self, error: RouterError) -> None:
        self.started = True
        await self._send(wire.start(error.status, wire.error_response_headers(error, self.generation_id)))
        await self._send(wire.body(error.json()))

"""One API request, start to end: the story every client API shares.

    key      = ledger.authenticate(...)        the key first: a bad key costs no body read
    body     = channel.read_body()             capped, with a deadline
    request  = dialect.parse(body)             the client's format -> the canonical request
    request  = dialect.memory.recall(...)      what it continues, if its API keeps state (Responses)
    routes   = request_routes(...)             the model, its fallback models, their deployments
    ticket   = ledger.admit(...)               limits, credit hold, an open usage record
    with channel.cancellable():                disconnect, stall, shutdown stop it here
        Attempts(...).run()                    deployments in turn; Delivery renders and sends
    dialect.memory.keep(...)                   the answer kept, if its API keeps state
    ledger.settle(ticket, outcome)             exactly once, whatever happened

From the moment the caller is known, whatever happens leaves exactly one usage record: a
refusal before admission is recorded by ``ledger.reject``, an admitted request is settled.
Domain refusals become the client's error at one place (``routing.errors.refusal_error``),
rendered in the client's format by its dialect.

With tracing on, the whole story runs inside the request's server span (``routing.relay.traces``).

Its steps are functions that ``routing.relay.embeddings`` tells the same story with, without a
stream: ``receive`` (key and body), ``refuse`` (a request refused before admission) and
``attempted`` (the attempt loop under the request's cancellation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from billing.credit import Ask
from billing.ledger import Outcome, Rejection, Settlement, Ticket, ledger
from billing.models import UsageStatus
from billing.selectors import KeyInfo
from billing.terms import Answerer
from lib import logs, metrics, tracing
from lib.ids import generation_id as new_generation_id
from routing.canonical import ChatRequest
from routing.dialects.base import ClientApi, Dialect
from routing.errors import REFUSALS, RouterError, UpstreamError, client_error
from routing.relay import traces
from routing.relay.attempts import Answering, Attempts
from routing.relay.channel import ClientChannel, ClientGone, error_headers
from routing.relay.delivery import Delivery
from routing.relay.flow import Interrupted
from routing.relay.meter import DeliveryMeter
from routing.routes import request_routes
from routing.selection import provider_vendors
from routing.selectors import ModelRoute

logger = logging.getLogger("siraya.relay")

SHUTDOWN = RouterError(503, "The router is shutting down.", code="server_shutdown")


# What serves one client API's requests: ``serve_request`` (the chat APIs), ``serve_embeddings``.
Serve = Callable[[Any, ClientChannel], Awaitable[None]]


async def serve_traced(api: ClientApi, serve: Serve, channel: ClientChannel) -> None:
    """``serve`` a request in its server span (tracing on: ``routing.relay.traces``)."""
    span = traces.request_span(api, channel.scope)
    traces.request_started(span)
    with tracing.current(span):
        await serve(api, channel)


async def serve_request(dialect: Dialect, channel: ClientChannel) -> None:
    received = await receive(dialect, channel)
    if received is None:
        return
    key, body = received
    received = None  # the pair would keep the raw body alive as long as the stream
    generation_id = new_generation_id()
    logs.generation_id.set(generation_id)
    model_name = ""
    try:
        request = dialect.parse(body)
        del body  # the parsed request holds what is needed; the raw body need not live as long as the stream
        model_name = request.model
        if dialect.memory is not None:  # before admission: the hold and the limits count what it adds
            request = await dialect.memory.recall(request, key.id)
        if tracing.ENABLED:
            traces.request_parsed(request, generation_id)
        routes = await request_routes(request.model, request.models[1:], provider_vendors(request.provider))
        terms = admission_terms(request, routes)
        ticket = await ledger.admit(key, generation_id, routes, ask_of(request), api=dialect.api, **terms)
    except Exception as raised:
        await refuse(dialect, channel, key, generation_id, model_name, raised)
        return
    await relay(dialect, channel, request, routes, ticket, key.id)


async def receive(api: ClientApi, channel: ClientChannel) -> tuple[KeyInfo, bytes] | None:
    """Return the request's key and body; None when the client was answered (refused) or left."""
    try:
        key = await ledger.authenticate(api.authorization(channel.header))
        if tracing.ENABLED:
            traces.key_known(key)
        return key, await channel.read_body()
    except ClientGone:
        if tracing.ENABLED:
            traces.client_gone()
        return None
    except (RouterError, *REFUSALS) as refused:
        error = client_error(refused)
        # Refused before its body was read to the end: the connection cannot carry another request.
        error.headers.setdefault("connection", "close")
        await send_error(api, channel, error, None)
        return None
    except Exception:
        # A bug, not the client's fault; still an answer in the API's shape, never a dropped connection.
        logger.exception("relay failed before admission")
        await send_error(api, channel, router_failure("read"), None)
        return None


async def refuse(
    api: ClientApi, channel: ClientChannel, key: KeyInfo, generation_id: str, model_name: str, raised: Exception
) -> None:
    """Record and answer a request that failed between its body and its admission (one usage record)."""
    if isinstance(raised, (RouterError, *REFUSALS)):
        error = client_error(raised)
        rejection = Rejection(error.status, error.code or "", error.message)
        await ledger.reject(key, generation_id, model_name, rejection, api.api)
        await send_error(api, channel, error, generation_id)
        return
    # A router bug (or, say, vendor credentials that no longer decrypt): still one usage
    # record and an answer in the API's shape.
    logger.exception("relay failed before admission", exc_info=raised)
    failure = router_failure("admit")
    try:
        await ledger.reject(key, generation_id, model_name, Rejection(500, "router_error", failure.message), api.api)
    except Exception:
        logger.exception("could not record the failed request")
    await send_error(api, channel, failure, generation_id)


async def relay(
    dialect: Dialect,
    channel: ClientChannel,
    request: ChatRequest,
    routes: tuple[ModelRoute, ...],
    ticket: Ticket,
    key_id: int,
) -> None:
    """Relay an admitted request; whatever happens, settle its usage record exactly once."""
    delivery = Delivery(channel, dialect, request, ticket)
    attempts = Attempts(delivery, routes)
    if request.stream:
        delivery.meter = DeliveryMeter(
            ticket, request, routes[0].targets[0], routes[0].encoding, delivery.vendor_prompt_tokens
        )
        channel.prepare_stream(
            [*dialect.stream_headers, (b"x-generation-id", ticket.generation_id.encode()), *ticket.rate_headers()]
        )
        metrics.STREAMS_OPEN.inc()
    ending = Ending()
    try:
        await attempted(delivery, attempts, ending, dialect.keepalive if request.stream else None)
    finally:
        if request.stream:
            metrics.STREAMS_OPEN.dec()
        if delivery.meter is not None:
            delivery.meter.close()
        try:
            outcome = ending.outcome(delivery, attempts, routes[0])
            kept = None
            if dialect.memory is not None and ending.status != UsageStatus.CANCELLED:
                # Queued in the group commit ahead of the settlement: a settled record means its
                # answer is kept (or never will be), and the two writes cost one commit, not two.
                kept = dialect.memory.keep(request, key_id, delivery.answer, delivery.renderer)
            try:
                settlement = await ledger.settle(ticket, outcome)
            finally:
                if kept is not None:
                    await kept  # never raises: a failed write is logged
            observe(outcome, attempts, routes[0], settlement)
            if tracing.ENABLED:
                traces.request_settled(outcome, settlement, attempts.current, delivery)
        finally:
            channel.release()


async def attempted(delivery: Answering, attempts: Attempts, ending: Ending, keepalive: bytes | None) -> None:
    """Run ``attempts`` under the request's cancellation; note on ``ending`` how they ended and
    tell the client of a failure (``keepalive``: a stream's, sent while nothing else is)."""
    channel = delivery.channel
    try:
        async with channel.cancellable():
            keeping = asyncio.create_task(channel.keep_alive(keepalive)) if keepalive is not None else None
            try:
                await attempts.run()
            finally:
                if keeping is not None:
                    keeping.cancel()
    except Interrupted as stop:  # the client left or stalled, or the router is shutting down
        ending.cancelled(stop.reason)
        if stop.reason == "server_shutdown":
            await fail(delivery, attempts, SHUTDOWN)
    except asyncio.CancelledError:  # by the server, from outside the router: settled all the same
        ending.cancelled("server_shutdown")
        raise
    except (RouterError, *REFUSALS) as raised:
        error = client_error(raised)
        # The record keeps the operator's account (the vendor's words, redacted); the client, error.message.
        ending.failed(error, error.detail if isinstance(error, UpstreamError) else error.message)
        await fail(delivery, attempts, error)
    except Exception:
        logger.exception("relay failed", extra={"generation_id": delivery.ticket.generation_id})
        failure = RouterError(500, "The router failed while relaying this request.", code="router_error")
        ending.failed(failure, failure.message)
        await fail(delivery, attempts, failure)


class Ending:
    """How the relay ended: its status, error code and message, HTTP status."""

    __slots__ = ("code", "http_status", "message", "status")

    def __init__(self) -> None:
        self.status, self.http_status, self.code, self.message = UsageStatus.COMPLETED, 200, "", ""

    def cancelled(self, reason: str) -> None:
        self.status, self.code = UsageStatus.CANCELLED, reason
        self.http_status = 503 if reason == "server_shutdown" else 499

    def failed(self, error: RouterError, message: str) -> None:
        self.status, self.http_status, self.code, self.message = (
            UsageStatus.ERROR,
            error.status,
            error.code or "",
            message,
        )

    def outcome(self, delivery: Delivery, attempts: Attempts, admitted: ModelRoute) -> Outcome:
        route, target = attempts.current or (admitted, None)
        usage, request, loop = delivery.usage, delivery.request, delivery.channel.loop
        started = delivery.channel.started_at
        first = delivery.first_token_at
        answerer = target.answerer() if target is not None else None
        return Outcome(
            status=self.status,
            http_status=self.http_status,
            error_code=self.code,
            error_message=self.message,
            finish_reason=delivery.finish_reason,
            vendor_prompt_tokens=usage.prompt_tokens,
            vendor_completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            delivered_text="".join(delivery.delivered),
            messages=request.messages,
            tools=request.params.get("tools"),
            encoding=route.encoding,
            first_token_ms=None if first is None else int((first - started) * 1000),
            duration_ms=int((loop.time() - started) * 1000),
            deployment_id=answerer.deployment_id if answerer else None,
            vendor_id=answerer.vendor_id if answerer else None,
            vendor_name=answerer.vendor_name if answerer else "",
            upstream_model=answerer.upstream_model if answerer else "",
            attempts=attempts.records,
            cut_at_limit=delivery.cut,
            answered_by=route if route is not admitted else None,
        )


def ask_of(request: ChatRequest) -> Ask:
    """What the request asks for, as far as its worst-case cost goes."""
    return Ask(request.messages, request.params.get("tools"), request.max_tokens, request.max_tokens_only)


def admission_terms(request: ChatRequest, routes: tuple[ModelRoute, ...]) -> dict[str, Any]:
    return {"streamed": request.stream, "answerer": only_answerer(routes)}


def only_answerer(routes: tuple[ModelRoute, ...]) -> Answerer | None:
    """The deployment that answers when only one can (the usual case): the record names it from the start."""
    return routes[0].targets[0].answerer() if len(routes) == 1 and len(routes[0].targets) == 1 else None


def router_failure(stage: str) -> RouterError:
    return RouterError(500, f"The router failed to {stage} this request.", code="router_error")


async def send_error(api: ClientApi, channel: ClientChannel, error: RouterError, generation_id: str | None) -> None:
    if tracing.ENABLED:
        traces.request_refused(error)
    await channel.answer(error.status, error_headers(error, generation_id), api.error_body(error))


async def fail(delivery: Answering, attempts: Attempts, error: RouterError) -> None:
    """Tell the client: in-band once the stream has started, else as the response."""
    channel, ticket = delivery.channel, delivery.ticket
    if channel.disconnected:
        return
    if not channel.started:
        await send_error(delivery.dialect, channel, error, ticket.generation_id)
        return
    assert isinstance(delivery, Delivery)  # only a stream starts before its answer is whole
    renderer = delivery.renderer
    if renderer is None:  # the stream began with a keepalive, before any attempt
        name = (attempts.current or (attempts.routes[0],))[0].name
        renderer = delivery.dialect.stream(delivery.request, ticket.generation_id, ticket.created, name)
    await channel.send(renderer.error(error), more=False)


def observe(outcome: Outcome, attempts: Attempts, admitted: ModelRoute, settlement: Settlement) -> None:
    if outcome.status == UsageStatus.CANCELLED:
        metrics.cancelled(outcome.error_code)
    first = None if outcome.first_token_ms is None else outcome.first_token_ms / 1000
    metrics.generation_settled(
        (attempts.current or (admitted,))[0].name,
        outcome.vendor_name,
        outcome.status,
        settlement.prompt_tokens,
        settlement.completion_tokens,
        settlement.cost,
        first,
        (outcome.duration_ms or 0) / 1000,
    )

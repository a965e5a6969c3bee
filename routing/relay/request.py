"""One API request, start to end: the story every client API shares.

    key      = ledger.authenticate(...)        the key first: a bad key costs no body read
    body     = channel.read_body()             capped, with a deadline
    request  = dialect.parse(body)             the client's format -> the canonical request
    routes   = request_routes(...)             the model, its fallback models, their deployments
    ticket   = ledger.admit(...)               limits, credit hold, an open usage record
    with channel.cancellable():                disconnect, stall, shutdown stop it here
        Attempts(...).run()                    deployments in turn; Delivery renders and sends
    ledger.settle(ticket, outcome)             exactly once, whatever happened

From the moment the caller is known, whatever happens leaves exactly one usage record: a
refusal before admission is recorded by ``ledger.reject``, an admitted request is settled.
Domain refusals become the client's error at one place (``routing.errors.refusal_error``),
rendered in the client's format by its dialect.

With tracing on, the whole story runs inside the request's server span (``routing.relay.traces``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from billing.credit import Ask
from billing.ledger import Outcome, Rejection, Settlement, Ticket, ledger
from billing.models import UsageStatus
from lib import logs, metrics, tracing
from lib.ids import generation_id as new_generation_id
from routing.canonical import ChatRequest
from routing.dialects.base import Dialect
from routing.errors import REFUSALS, RouterError, UpstreamError, client_error
from routing.relay import traces
from routing.relay.attempts import Attempts
from routing.relay.channel import ClientChannel, ClientGone, error_headers
from routing.relay.delivery import Delivery
from routing.relay.flow import Interrupted
from routing.relay.meter import DeliveryMeter
from routing.routes import request_routes
from routing.selection import provider_vendors
from routing.selectors import ModelRoute

logger = logging.getLogger("siraya.relay")

SHUTDOWN = RouterError(503, "The router is shutting down.", code="server_shutdown")


async def serve_request(dialect: Dialect, channel: ClientChannel) -> None:
    if not tracing.ENABLED:
        await _serve_request(dialect, channel)
        return
    span = traces.request_span(dialect, channel)
    traces.request_started(span)
    with tracing.current(span):
        await _serve_request(dialect, channel)


async def _serve_request(dialect: Dialect, channel: ClientChannel) -> None:
    try:
        key = await ledger.authenticate(dialect.authorization(channel.header))
        if tracing.ENABLED:
            traces.key_known(key)
        body = await channel.read_body()
    except ClientGone:
        if tracing.ENABLED:
            traces.client_gone()
        return
    except (RouterError, *REFUSALS) as refused:
        error = client_error(refused)
        # Refused before its body was read to the end: the connection cannot carry another request.
        error.headers.setdefault("connection", "close")
        await send_error(dialect, channel, error, None)
        return
    except Exception:
        # A bug, not the client's fault; still an answer in the API's shape, never a dropped connection.
        logger.exception("relay failed before admission")
        await send_error(dialect, channel, router_failure("read"), None)
        return
    generation_id = new_generation_id()
    logs.generation_id.set(generation_id)
    model_name = ""
    try:
        request = dialect.parse(body)
        del body  # the parsed request holds what is needed; the raw body need not live as long as the stream
        model_name = request.model
        if tracing.ENABLED:
            traces.request_parsed(request, generation_id)
        routes = await request_routes(request.model, request.models[1:], provider_vendors(request.provider))
        terms = admission_terms(request, routes)
        ticket = await ledger.admit(key, generation_id, routes, ask_of(request), api=dialect.api, **terms)
    except (RouterError, *REFUSALS) as refused:
        error = client_error(refused)
        rejection = Rejection(error.status, error.code or "", error.message)
        await ledger.reject(key, generation_id, model_name, rejection, dialect.api)
        await send_error(dialect, channel, error, generation_id)
        return
    except Exception:
        # A router bug (or, say, vendor credentials that no longer decrypt): still one usage
        # record and an answer in the API's shape.
        logger.exception("relay failed before admission")
        failure = router_failure("admit")
        try:
            rejection = Rejection(500, "router_error", failure.message)
            await ledger.reject(key, generation_id, model_name, rejection, dialect.api)
        except Exception:
            logger.exception("could not record the failed request")
        await send_error(dialect, channel, failure, generation_id)
        return
    await relay(dialect, channel, request, routes, ticket)


async def relay(
    dialect: Dialect, channel: ClientChannel, request: ChatRequest, routes: tuple[ModelRoute, ...], ticket: Ticket
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
        async with channel.cancellable():
            keepalive = asyncio.create_task(channel.keep_alive(dialect.keepalive)) if request.stream else None
            try:
                await attempts.run()
            finally:
                if keepalive is not None:
                    keepalive.cancel()
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
        logger.exception("relay failed", extra={"generation_id": ticket.generation_id})
        failure = RouterError(500, "The router failed while relaying this request.", code="router_error")
        ending.failed(failure, failure.message)
        await fail(delivery, attempts, failure)
    finally:
        if request.stream:
            metrics.STREAMS_OPEN.dec()
        if delivery.meter is not None:
            delivery.meter.close()
        try:
            outcome = ending.outcome(delivery, attempts, routes[0])
            settlement = await ledger.settle(ticket, outcome)
            observe(outcome, attempts, routes[0], settlement)
            if tracing.ENABLED:
                traces.request_settled(outcome, settlement, attempts.current, delivery)
        finally:
            channel.release()


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
    # One deployment can answer (the usual case): the record names it from the start.
    only = routes[0].targets[0].answerer() if len(routes) == 1 and len(routes[0].targets) == 1 else None
    return {"streamed": request.stream, "answerer": only}


def router_failure(stage: str) -> RouterError:
    return RouterError(500, f"The router failed to {stage} this request.", code="router_error")


async def send_error(dialect: Dialect, channel: ClientChannel, error: RouterError, generation_id: str | None) -> None:
    if tracing.ENABLED:
        traces.request_refused(error)
    await channel.answer(error.status, error_headers(error, generation_id), dialect.error_body(error))


async def fail(delivery: Delivery, attempts: Attempts, error: RouterError) -> None:
    """Tell the client: in-band once the stream has started, else as the response."""
    channel, ticket = delivery.channel, delivery.ticket
    if channel.disconnected:
        return
    if not channel.started:
        await send_error(delivery.dialect, channel, error, ticket.generation_id)
        return
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

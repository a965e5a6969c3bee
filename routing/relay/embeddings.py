"""One ``POST /v1/embeddings`` request: the story of ``routing.relay.request``, with one JSON answer.

    key, body = receive(...)                    as every client API
    request   = api.parse(body)                 the canonical ``EmbeddingRequest``
    routes    = request_routes(..., embedding)  a chat model here is a 400, as the reverse is
    prompt    = the router's count of the input
    ticket    = ledger.admit(...)               the hold and the rate charge count the input at
                                                the input price (an embedding model's completion
                                                ceiling is zero: ``routing.selectors``)
    attempted(EmbeddingDelivery, Attempts)      the plan, fallbacks and cooldowns chat has
    ledger.settle(ticket, outcome)              the vendor's prompt tokens, else the router's count

Embeddings are never streamed, so this is the non-stream half of the relay alone: no meter,
no keepalive, no renderer; the dialect renders one body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from billing.counting import counting_pool
from billing.credit import Ask
from billing.ledger import Outcome, Ticket, ledger
from lib import logs, tokens, tracing
from lib.ids import generation_id as new_generation_id
from routing.canonical import EmbeddingRequest
from routing.dialects.base import EmbeddingAnswer, EmbeddingDialect
from routing.errors import UpstreamError
from routing.models import ModelMode
from routing.relay import traces
from routing.relay.attempts import Attempts
from routing.relay.channel import JSON_HEADERS, ClientChannel
from routing.relay.request import Ending, attempted, observe, only_answerer, receive, refuse
from routing.routes import request_routes
from routing.selectors import ModelRoute, Target
from routing.vendors import adapter_for
from routing.vendors.base import EmbeddingCall, Usage


async def serve_embeddings(api: EmbeddingDialect, channel: ClientChannel) -> None:
    received = await receive(api, channel)
    if received is None:
        return
    key, body = received
    received = None  # as in serve_request: the body need not outlive the parse
    generation_id = new_generation_id()
    logs.generation_id.set(generation_id)
    model_name = ""
    try:
        request = api.parse(body)
        del body
        model_name = request.model
        if tracing.ENABLED:
            traces.embedding_parsed(request, generation_id)
        routes = await request_routes(request.model, mode=ModelMode.EMBEDDING)
        inputs = request.inputs
        prompt = await counting_pool().run(tokens.inputs_chars(inputs), tokens.count_inputs, inputs, routes[0].encoding)
        ask = Ask([], prompt_tokens=prompt)
        ticket = await ledger.admit(
            key, generation_id, routes, ask, api=api.api, streamed=False, answerer=only_answerer(routes)
        )
    except Exception as raised:
        await refuse(api, channel, key, generation_id, model_name, raised)
        return
    await relay_embeddings(api, channel, request, routes[0], ticket, prompt)


async def relay_embeddings(
    api: EmbeddingDialect,
    channel: ClientChannel,
    request: EmbeddingRequest,
    route: ModelRoute,
    ticket: Ticket,
    prompt_tokens: int,
) -> None:
    """Relay an admitted request; whatever happens, settle its usage record exactly once."""
    delivery = EmbeddingDelivery(channel, api, request, ticket, prompt_tokens)
    attempts = Attempts(delivery, (route,))
    ending = Ending()
    try:
        await attempted(delivery, attempts, ending, None)
    finally:
        try:
            outcome = delivery.outcome(ending, attempts, route)
            settlement = await ledger.settle(ticket, outcome)
            observe(outcome, attempts, route, settlement)
            if tracing.ENABLED:
                traces.request_settled(outcome, settlement, attempts.current, delivery)
        finally:
            channel.release()


class EmbeddingDelivery:
    """One embedding request's answer: each attempt asks a deployment for every vector; the
    first that answers them all is sent whole."""

    __slots__ = (
        "answer_started", "channel", "dialect", "finish_reason", "first_token_at", "prompt_tokens", "request",
        "ticket", "usage",
    )  # fmt: skip

    def __init__(
        self,
        channel: ClientChannel,
        dialect: EmbeddingDialect,
        request: EmbeddingRequest,
        ticket: Ticket,
        prompt_tokens: int,
    ) -> None:
        self.channel = channel
        self.dialect = dialect
        self.request = request
        self.ticket = ticket
        self.prompt_tokens = prompt_tokens  # the router's count of the input
        self.usage = Usage()  # what the answering vendor reported
        self.finish_reason = ""
        self.first_token_at: float | None = None
        self.answer_started = False

    @property
    def provider(self) -> dict[str, Any]:
        return {}  # the embeddings API has no vendor preferences

    def attempt_failed(self) -> None:
        self.usage = Usage()

    async def attempt(self, route: ModelRoute, target: Target) -> None:
        vendor, request, ticket = target.vendor, self.request, self.ticket
        call = EmbeddingCall(
            request.inputs, target.upstream_model, ticket.generation_id, request.dimensions, request.user
        )
        try:
            # One deadline for the whole answer, however many vendor calls the adapter makes.
            async with asyncio.timeout(vendor.first_byte_timeout):
                embeddings = await adapter_for(vendor).embed(call)
        except TimeoutError:
            raise UpstreamError(
                504, f"Vendor '{vendor.name}' timed out.", code="upstream_timeout", retryable=True
            ) from None
        if len(embeddings.vectors) != len(request.inputs):
            raise UpstreamError(
                502,
                f"Vendor '{vendor.name}' sent {len(embeddings.vectors)} vectors for {len(request.inputs)} inputs.",
                code="upstream_malformed",
                retryable=True,
            )
        self.usage = Usage(prompt_tokens=embeddings.prompt_tokens, completion_tokens=0)
        prompt = self.prompt_tokens if embeddings.prompt_tokens is None else embeddings.prompt_tokens
        body = self.dialect.answer(EmbeddingAnswer(route.name, embeddings.vectors, prompt, request))
        headers = [*JSON_HEADERS, (b"x-generation-id", ticket.generation_id.encode()), *ticket.rate_headers()]
        self.answer_started = True
        await self.channel.answer(200, headers, body)
        self.first_token_at = self.channel.loop.time()

    def outcome(self, ending: Ending, attempts: Attempts, route: ModelRoute) -> Outcome:
        """How the request ended, billed at the input price: the vendor's count of the input, else the router's."""
        answerer = attempts.current[1].answerer() if attempts.current is not None else None
        started, first = self.channel.started_at, self.first_token_at
        return Outcome(
            status=ending.status,
            http_status=ending.http_status,
            error_code=ending.code,
            error_message=ending.message,
            vendor_prompt_tokens=self.usage.prompt_tokens,
            # An embedding has no output: a vendor that counted the input counted everything.
            vendor_completion_tokens=0 if self.usage.prompt_tokens is not None else None,
            prompt_tokens=self.prompt_tokens,
            delivered_tokens=0,
            encoding=route.encoding,
            first_token_ms=None if first is None else int((first - started) * 1000),
            duration_ms=int((self.channel.loop.time() - started) * 1000),
            deployment_id=answerer.deployment_id if answerer else None,
            vendor_id=answerer.vendor_id if answerer else None,
            vendor_name=answerer.vendor_name if answerer else "",
            upstream_model=answerer.upstream_model if answerer else "",
            attempts=attempts.records,
        )

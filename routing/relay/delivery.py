"""One request's answer on its way to the client: a vendor attempt's events, rendered by the
client's dialect and sent on the client channel, and what of it reached the client.

``stream`` relays one attempt's stream, ``complete`` one attempt's whole answer. What was
delivered (text, tokens, the finish reason, whether the router cut the answer) is what the
request is billed for when the vendor's own figures cannot be used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from itertools import chain
from typing import Any

from billing.ledger import Ticket
from lib import tokens
from routing.canonical import ChatRequest
from routing.dialects.base import Answer, ClientUsage, Dialect, StreamRenderer
from routing.errors import UpstreamError
from routing.relay.channel import JSON_HEADERS, ClientChannel
from routing.relay.events import carries_answer, delivered_text, finish_reason
from routing.relay.flow import Deadline, Interrupted
from routing.relay.limits import choice_token_limit, clip_answer, limit_counts_reasoning
from routing.relay.meter import UNCOUNTED, DeliveryMeter
from routing.selectors import ModelRoute, Target
from routing.vendors import adapter_for
from routing.vendors.base import ChunkEvent, StreamEvent, TextRun, UpstreamCall, Usage


class Delivery:
    # One per open stream: slots keep each a few hundred bytes smaller than a __dict__ would.
    __slots__ = (
        "answer", "answer_started", "channel", "cut", "delivered", "dialect", "finish_reason", "first_token_at", "meter",
        "renderer", "request", "ticket", "usage",
    )  # fmt: skip

    def __init__(self, channel: ClientChannel, dialect: Dialect, request: ChatRequest, ticket: Ticket) -> None:
        self.channel = channel
        self.dialect = dialect
        self.request = request
        self.ticket = ticket
        self.meter: DeliveryMeter | None = None  # streams only: a JSON answer is delivered whole
        self.renderer: StreamRenderer | None = None  # the current attempt's (streams)
        self.delivered: list[str] = []  # the billable text handed to the client
        self.usage = Usage()  # what the vendor reported
        self.cut = False  # the router cut the answer at max_tokens: billed for what was delivered
        self.finish_reason = ""
        self.first_token_at: float | None = None
        self.answer_started = False  # a byte of the answer reached the client: no more fallbacks
        self.answer: Answer | None = None  # a whole answer, once sent

    def attempt_failed(self) -> None:
        """Forget what a failed attempt reported: another deployment answers afresh."""
        self.usage, self.finish_reason = Usage(), ""

    @property
    def provider(self) -> dict[str, Any]:
        return self.request.provider

    def attempt(self, route: ModelRoute, target: Target) -> Coroutine[Any, Any, None]:
        # The stream's own coroutine, not one awaiting it: a frame less for every open stream.
        return self.stream(route, target) if self.request.stream else self.complete(route, target)

    def vendor_prompt_tokens(self) -> int | None:
        return self.usage.prompt_tokens

    # -- a stream -------------------------------------------------------------------------

    async def stream(self, route: ModelRoute, target: Target) -> None:
        vendor = target.vendor
        call = UpstreamCall(self.request, target.upstream_model, self.ticket.generation_id, route.max_output_tokens)
        batches = adapter_for(vendor).stream(call)
        renderer = self.renderer = self.dialect.stream(
            self.request, self.ticket.generation_id, self.ticket.created, route.name
        )
        meter = self.meter
        assert meter is not None
        meter.target = target  # checkpoints name the deployment now answering
        # Chunks that carry nothing of the answer yet (the role chunk) wait here, so that a
        # failure before the first real token can still fall back to another deployment.
        held: list[bytes] = []
        idle = vendor.idle_timeout
        loop = self.channel.loop
        try:
            # One vendor deadline, moved forward by each batch once the answer has started.
            async with Deadline(vendor.first_byte_timeout) as deadline:
                async for batch in batches:
                    exhausted = await self.relay_batch(batch, held, meter, renderer)
                    # While the next read is awaited, the stream keeps no parsed chunk alive
                    # (memory per held-open stream).
                    batch.clear()
                    if exhausted:
                        break
                    if self.answer_started:
                        deadline.move(loop.time() + idle)
        except Interrupted:  # the deadline's: the request's own cancellation is the channel's
            phase = "the first token" if self.first_token_at is None else "the next token"
            raise UpstreamError(
                504,
                f"Vendor '{vendor.name}' timed out waiting for {phase}.",
                code="upstream_timeout",
                retryable=True,
                note=f"waiting for {phase}",
            ) from None
        finally:
            await batches.aclose()  # type: ignore[attr-defined]
        usage = self.client_usage(route) if self.dialect.wants_usage(self.request) else None
        await self.channel.send_chunk(b"".join(held) + renderer.finish(usage), more=False)

    async def relay_batch(
        self, batch: list[StreamEvent], held: list[bytes], meter: DeliveryMeter, renderer: StreamRenderer
    ) -> bool:
        """Hand one vendor read's chunks to the client in one write; return True at the token limit.

        Once the answer has started and no token limit applies (most chunks of most streams), a
        chunk costs its text, its finish reason and its rendering, and no object of its own; a
        run of text chunks (``TextRun``) is rendered at once, when the dialect can.
        """
        out: list[bytes] = []
        texts: list[str] = []
        count = 0
        finish = ""
        exhausted = False
        plain = meter.limit is None
        # The texts handed on without a count (all of them without a limit): the meter counts
        # them when a checkpoint may be due.
        uncounted = texts if plain else []
        events = iter(batch)
        while (event := next(events, None)) is not None:
            if type(event) is TextRun:
                if self.answer_started:
                    counted = 0 if plain else await meter.run_tokens(event)
                    if counted is not None and (data := renderer.text_run(event)) is not None:
                        if not plain:
                            meter.measured_run(counted, event)
                            if counted == UNCOUNTED:
                                uncounted += event.texts
                            else:
                                count += counted
                        texts += event.texts
                        out.append(data)
                        continue
                # Chunk by chunk (the answer's start, a cut within the run, a renderer's choice).
                events = chain(event.chunks(), events)
                continue
            if type(event) is not ChunkEvent:
                self.usage = self.usage.merge(event.usage)  # type: ignore[union-attr]
                continue
            choices = event.choices
            if plain and self.answer_started:
                text = delivered_text(choices)
                if text:
                    texts.append(text)
                finish = finish_reason(choices) or finish
                out.append(renderer.chunk(choices, event.extra, event.native))
                continue
            piece = meter.piece(choices) if plain else await meter.measure(choices)
            exhausted = piece.exhausted
            # A chunk the limit cut is rendered from its cut choices, no longer the vendor's event.
            native = event.native if piece.choices is choices else None
            data = b"" if not piece.text and exhausted else renderer.chunk(piece.choices, event.extra, native)
            if not self.answer_started and not exhausted and not carries_answer(piece.choices, piece.text):
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
            # A finish a dialect renders only at the end (Messages' stop_reason) is noted too.
            finish = finish_reason(piece.choices) or finish
            if exhausted:  # the vendor ignored max_tokens: stop here, close upstream
                self.finish_reason = "length"
                self.cut = True  # billed for what was delivered, whatever the vendor reported so far
                out.append(renderer.cut(meter.length_choices()))
                break
        if out:
            await self.channel.send_chunk(b"".join(out))
            self.note_delivered(texts, count, finish, uncounted)
        elif finish:
            self.note_delivered(texts, count, finish)  # nothing to send: the client gets it at the end
        return exhausted

    def note_delivered(
        self, texts: list[str], tokens_counted: int, finish: str, uncounted: list[str] | None = None
    ) -> None:
        """Note what one write handed to the client: its text, counted tokens (and the texts not
        counted yet, of ``texts``) and finish reason."""
        if self.channel.disconnected:
            return
        self.delivered += texts
        if finish:
            self.finish_reason = finish
        if self.first_token_at is None:
            self.first_token_at = self.channel.loop.time()
        if self.meter is not None:
            self.meter.delivered(tokens_counted, uncounted)

    def client_usage(self, route: ModelRoute, delivered: str | None = None) -> ClientUsage:
        """The figures the client is told: the vendor's, else the router's count (of ``delivered``,
        or of what was delivered so far)."""
        encoding = route.encoding
        request = self.request
        prompt = self.usage.prompt_tokens
        if prompt is None:
            prompt = tokens.count_messages(request.messages, encoding, request.params.get("tools"))
        completion = None if self.cut else self.usage.completion_tokens
        if completion is None:
            text = "".join(self.delivered) if delivered is None else delivered
            completion = tokens.count_text(text, encoding)
        usage = self.usage
        return ClientUsage(prompt, completion, usage.cached_tokens, usage.reasoning_tokens, usage.cache_write_tokens)

    # -- one JSON body --------------------------------------------------------------------

    async def complete(self, route: ModelRoute, target: Target) -> None:
        vendor = target.vendor
        call = UpstreamCall(self.request, target.upstream_model, self.ticket.generation_id, route.max_output_tokens)
        try:
            async with asyncio.timeout(vendor.first_byte_timeout):
                completion = await adapter_for(vendor).complete(call)
        except TimeoutError:
            raise UpstreamError(
                504, f"Vendor '{vendor.name}' timed out.", code="upstream_timeout", retryable=True
            ) from None
        if completion.usage is not None:
            self.usage = completion.usage
        choices = self.within_max_tokens(route, target, completion.choices)
        text = delivered_text(choices)
        ticket = self.ticket
        usage = self.client_usage(route, text)
        native = None if self.cut else completion.native  # a cut answer is the cut choices
        answer = Answer(
            ticket.generation_id, ticket.created, route.name, choices, completion.extra, usage, self.request, native
        )
        headers = [*JSON_HEADERS, (b"x-generation-id", ticket.generation_id.encode()), *ticket.rate_headers()]
        self.answer_started = True
        await self.channel.answer(200, headers, self.dialect.answer(answer))
        if not self.channel.disconnected:
            self.delivered.append(text)  # nothing is delivered until the body is sent
            self.answer = answer
        self.first_token_at = self.channel.loop.time()
        self.finish_reason = finish_reason(choices) or self.finish_reason

    def within_max_tokens(
        self, route: ModelRoute, target: Target, choices: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A JSON answer's choices, each cut if the vendor ignored the client's ``max_tokens``
        (the router's count passes the limit by more than the tokenizer margin, ``clip_answer``).

        Counted only when the vendor's own figure is missing or over the limit (a vendor that
        honours ``max_tokens`` costs nothing here); a cut answer is billed for what it delivers,
        as a cut stream is."""
        limit = choice_token_limit(self.request)
        if limit is None:
            return choices
        reported = self.usage.completion_tokens
        if reported is not None and reported <= limit:
            return choices
        clipped = clip_answer(choices, limit, route.encoding, limit_counts_reasoning(self.request, target))
        if clipped is None:
            return choices
        self.cut = True
        return clipped

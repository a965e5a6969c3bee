"""The attempt loop: try the planned deployments in turn until one answers.

The plan (``routing.selection``) orders the request's models and their deployments, those in
cooldown last. Another deployment is tried only while nothing of the answer has reached the
client, so a client never gets two vendors' text spliced together, and only for failures
that another deployment might not have (``fallback_allowed``). A failed deployment cools
down (``routing.health``), unless the router never sent it the request: a request its model
cannot take says nothing of its health (``counts_against_deployment``). Every attempt is
kept on the usage record, and with tracing on each is a client span of its own
(``routing.relay.traces``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from typing import Any, Protocol

from billing.ledger import Ticket
from lib import tracing
from routing.dialects.base import ClientApi
from routing.errors import UpstreamError
from routing.health import CooldownStore, cooldowns
from routing.relay import traces
from routing.relay.channel import ClientChannel
from routing.selection import attempt_plan, counts_against_deployment, fallback_allowed
from routing.selectors import ModelRoute, Target
from routing.vendors import http
from routing.vendors.base import Usage

logger = logging.getLogger("siraya.relay")
_rng = random.Random()


class Answering(Protocol):
    """One request's answer on its way, as the attempt loop drives it: ``Delivery`` (chat, whole
    or streamed) or ``routing.relay.embeddings.EmbeddingDelivery``."""

    @property
    def channel(self) -> ClientChannel: ...
    @property
    def dialect(self) -> ClientApi: ...
    @property
    def ticket(self) -> Ticket: ...
    @property
    def provider(self) -> dict[str, Any]:
        """The request's vendor preferences (``routing.selection``)."""
        ...

    answer_started: bool  # a byte of the answer reached the client: no more fallbacks
    usage: Usage  # what the answering vendor reported
    finish_reason: str
    first_token_at: float | None

    def attempt(self, route: ModelRoute, target: Target) -> Awaitable[None]:
        """Have ``target`` answer; raise ``UpstreamError`` if it fails."""
        ...

    def attempt_failed(self) -> None:
        """Forget what a failed attempt reported: another deployment answers afresh."""
        ...


class Attempts:
    __slots__ = ("current", "delivery", "generation_id", "records", "routes")

    def __init__(self, delivery: Answering, routes: tuple[ModelRoute, ...]) -> None:
        self.delivery = delivery
        self.routes = routes
        self.generation_id = delivery.ticket.generation_id
        self.current: tuple[ModelRoute, Target] | None = None  # the attempt answering, or the last one
        self.records: list[dict[str, Any]] = []  # every attempt, as the usage record keeps it

    async def run(self) -> None:
        """Relay the answer of the first deployment that gives one; raise the last failure (of a
        deployment that was sent the request, if any was: the one that says what went wrong)."""
        delivery = self.delivery
        store = cooldowns()
        plan = await self.plan(store)
        loop = delivery.channel.loop
        sent_failure: UpstreamError | None = None
        for number, (route, target) in enumerate(plan, 1):
            self.current = (route, target)
            began = loop.time()
            try:
                if tracing.ENABLED:
                    await self.attempt_traced(route, target, number)
                else:
                    await delivery.attempt(route, target)
            except UpstreamError as error:
                error.detail = http.vendor_text(error.detail, target.vendor)  # before it is kept anywhere
                self.records.append(self.record(target, loop.time() - began, error))
                if not fallback_allowed(error):
                    raise  # the request itself is at fault, not the deployment
                if counts_against_deployment(error):
                    retry_after = error.retry_after if error.vendor_status == 429 else None
                    await store.record_failure(target.deployment_id, retry_after)
                    sent_failure = error
                if delivery.answer_started or number == len(plan):
                    if sent_failure is None or sent_failure is error:
                        raise
                    raise sent_failure from None  # this refusal stays on the record's attempts
                delivery.attempt_failed()
                continue
            except asyncio.CancelledError:
                self.records.append(self.record(target, loop.time() - began, None, "cancelled"))
                raise
            self.records.append(self.record(target, loop.time() - began, None, "ok"))
            return

    async def plan(self, store: CooldownStore) -> list[tuple[ModelRoute, Target]]:
        """The deployments to try, in order (a function of its own: what it looks up is not kept
        alive by the frame that runs the attempts for the whole stream)."""
        ids = [t.deployment_id for r in self.routes for t in r.targets]
        # One deployment is tried whether it is cooling or not: no cooldown lookup for it.
        cooling = await store.cooling(ids) if len(ids) > 1 else set()
        return attempt_plan(self.routes, self.delivery.provider, cooling, _rng)

    async def attempt_traced(self, route: ModelRoute, target: Target, number: int) -> None:
        """``attempt`` in its client span, current while the vendor request is sent (its traceparent)."""
        span = traces.attempt_span(route, target, number, self.records[-1] if self.records else None)
        with tracing.current(span):
            try:
                await self.delivery.attempt(route, target)
            except UpstreamError as error:
                traces.attempt_failed(span, error)
                raise
            except asyncio.CancelledError:
                traces.attempt_cancelled(span)
                raise
            except Exception as error:
                tracing.failed(span, type(error).__name__)
                raise
            traces.attempt_answered(span, target, self.delivery)

    def record(
        self, target: Target, seconds: float, error: UpstreamError | None, outcome: str = "error"
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "deployment": target.deployment_id,
            "vendor": target.vendor.name,
            "upstream_model": target.upstream_model,
            "outcome": outcome,
            "latency_ms": int(seconds * 1000),
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

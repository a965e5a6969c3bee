"""In-process cache of model routes (model, prices, deployments, vendor settings).

Routing a request must not cost a database round trip, so the relay's admission reads routes
from here. A cached route is trusted for ``SIRAYA_ROUTE_CACHE_SECONDS`` (default 1 s): a
change made in another process (the CLI, another server process) applies to requests that
start at most that long after it. Changes saved in this process (the admin, services) drop
the cache at once. Every usage record stores the prices its request was admitted with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from billing import outage
from billing.errors import DatabaseUnavailable
from routing.errors import NoDeployment, NoEligibleProvider, UnknownModel, WrongModelMode
from routing.models import ModelMode
from routing.selectors import ModelRoute, model_route

# model name -> (route or None for unknown/disabled, monotonic expiry)
_cache: dict[str, tuple[ModelRoute | None, float]] = {}
_CACHE_MAX = 10_000


def model_route_peek(name: str) -> tuple[bool, ModelRoute | None]:
    """Return (found, route) from the cache alone: no database work, safe on the event loop."""
    entry = _cache.get(name)
    if entry is not None and entry[1] > time.monotonic():
        return True, entry[0]
    return False, None


def model_route_cached(name: str) -> ModelRoute | None:
    ttl = settings.SIRAYA_ROUTE_CACHE_SECONDS
    if ttl <= 0:
        return model_route(name)
    hit, route = model_route_peek(name)
    if hit:
        return route
    now = time.monotonic()
    route = model_route(name)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[name] = (route, now + ttl)
    return route


_model_route_async = database_sync_to_async(model_route_cached)
# Lookups in flight, so that the requests that find a model's route expired together wait for
# one lookup rather than each queueing its own on the database thread.
_pending: dict[str, asyncio.Future[ModelRoute | None]] = {}


async def model_route_shared(name: str) -> ModelRoute | None:
    """``model_route_cached`` for the event loop: a cached route at once, else one lookup per model at a time."""
    hit, route = model_route_peek(name)  # a cached route costs no hop to a worker thread
    if hit:
        return route
    if outage.admits_during_outage():
        return await _route_through_outage(name)
    return await _route_loaded(name)


async def _route_loaded(name: str) -> ModelRoute | None:
    pending = _pending.get(name)
    if pending is None or pending.get_loop() is not asyncio.get_running_loop():
        # Bounded: a database outage answers 503 database_unavailable, not a 500 or a hang.
        pending = _pending[name] = asyncio.ensure_future(outage.within_bound(_model_route_async(name)))
        pending.add_done_callback(lambda done: _pending.pop(name, None) if _pending.get(name) is done else None)
    return await asyncio.shield(pending)


async def _route_through_outage(name: str) -> ModelRoute | None:
    """With ``SIRAYA_ADMIT_DURING_OUTAGE=journal``: while the database is away, the route last
    cached, however old (a model changed meanwhile is not seen until it is back)."""
    last = _cache.get(name)
    if last is not None and outage.seems_down():
        return last[0]
    try:
        return await _route_loaded(name)
    except DatabaseUnavailable:
        if last is None:
            raise
        return last[0]


async def request_routes(
    model_name: str,
    fallback_models: Sequence[str] = (),
    vendors: Collection[str] | None = None,
    mode: str = ModelMode.CHAT,
) -> tuple[ModelRoute, ...]:
    """Return the routes of a request's model and its fallback ``models``, in order, those with
    no deployment left out; raise ``UnknownModel``, ``WrongModelMode`` (a model of another
    ``mode`` than the request's API serves), ``NoDeployment`` or, when ``vendors`` (the only
    vendors the request may use) serve none of them, ``NoEligibleProvider``."""
    routes = []
    for name in dict.fromkeys([model_name, *fallback_models]):
        route = await model_route_shared(name)
        param = "model" if name == model_name else "models"
        if route is None:
            raise UnknownModel(name, param)
        if route.mode != mode:
            raise WrongModelMode(name, route.mode, param)
        if route.targets:
            routes.append(route)
    if not routes:
        raise NoDeployment(model_name)
    if vendors is not None and not any(t.vendor.name in vendors for r in routes for t in r.targets):
        raise NoEligibleProvider(model_name)
    return tuple(routes)


def route_cache_clear(*args: Any, **kwargs: Any) -> None:
    """Forget every cached route (signature fits a Django signal receiver)."""
    _cache.clear()


def connect_invalidation() -> None:
    from django.db.models.signals import post_delete, post_save

    from routing.models import Deployment, RouterModel, Vendor

    for model in (RouterModel, Deployment, Vendor):
        post_save.connect(route_cache_clear, sender=model, dispatch_uid=f"route-cache-{model.__name__}")
        post_delete.connect(route_cache_clear, sender=model, dispatch_uid=f"route-cache-del-{model.__name__}")

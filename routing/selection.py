"""Which deployments to try for a request, in what order.

Deployments are grouped by priority (lower first). Within a priority, healthy deployments
are drawn by weight, without replacement, so a failure falls through to the next one and
then to the next priority. Deployments in cooldown go last: they are tried only when
everything healthy has failed, which beats refusing the request outright.

A request may name vendors (``provider.order``) and forbid fallbacks
(``provider.allow_fallbacks: false``), as OpenRouter's clients do.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from itertools import groupby
from typing import Any

from routing.errors import NoEligibleProvider, UpstreamError, invalid
from routing.selectors import ModelRoute, Target


def weighted_order(targets: Sequence[Target], rng: random.Random) -> list[Target]:
    """Return ``targets`` in a random order where each next pick is proportional to weight."""
    pool = [t for t in targets if t.weight > 0]
    order: list[Target] = []
    while pool:
        total = sum(t.weight for t in pool)
        point = rng.uniform(0, total)
        for index, target in enumerate(pool):
            point -= target.weight
            if point <= 0 or index == len(pool) - 1:
                order.append(pool.pop(index))
                break
    return order + [t for t in targets if t.weight == 0]


def deployment_order(route: ModelRoute, cooling: Collection[int], rng: random.Random) -> list[Target]:
    if len(route.targets) == 1:
        return list(route.targets)  # one deployment is tried, cooling or not, whatever its weight
    healthy: list[Target] = []
    for _, group in groupby(route.targets, key=lambda t: t.priority):
        members = list(group)
        healthy.extend(weighted_order([t for t in members if t.deployment_id not in cooling], rng))
    cooled = [t for t in route.targets if t.deployment_id in cooling]
    return healthy + cooled


def provider_preferences(provider: dict[str, Any]) -> tuple[list[str], bool]:
    """Validate ``provider``: return (vendor names in order, whether fallbacks are allowed)."""
    order = provider.get("order", [])
    if not isinstance(order, list) or not all(isinstance(name, str) for name in order):
        raise invalid("'provider.order' must be an array of vendor names.", "provider.order")
    allow = provider.get("allow_fallbacks", True)
    if not isinstance(allow, bool):
        raise invalid("'provider.allow_fallbacks' must be a boolean.", "provider.allow_fallbacks", "invalid_type")
    return order, allow


def provider_vendors(provider: dict[str, Any]) -> frozenset[str] | None:
    """Validate ``provider``; return the only vendors the request may use (None: any vendor).

    Admission refuses a request whose models have no deployment on them (400, nothing held).
    """
    order, allow = provider_preferences(provider)
    return frozenset(order) if order and not allow else None


def apply_provider(plan: list[Target], order: list[str], allow_fallbacks: bool) -> list[Target]:
    if order:
        rank = {name: i for i, name in enumerate(order)}
        named = sorted((t for t in plan if t.vendor.name in rank), key=lambda t: rank[t.vendor.name])
        rest = [t for t in plan if t.vendor.name not in rank]
        return named + rest if allow_fallbacks else named
    return plan if allow_fallbacks else plan[:1]


def attempt_plan(
    routes: Sequence[ModelRoute], provider: dict[str, Any], cooling: Collection[int], rng: random.Random
) -> list[tuple[ModelRoute, Target]]:
    """Return every (model, deployment) to try, in order: models as the request listed them."""
    order, allow = provider_preferences(provider)
    plan: list[tuple[ModelRoute, Target]] = []
    for route in routes:
        targets = apply_provider(deployment_order(route, cooling, rng), order, allow)
        plan.extend((route, target) for target in targets)
    if not plan:  # admission refuses such a request first (``provider_vendors``); never relay nothing
        raise NoEligibleProvider(routes[0].name if routes else "")
    return plan


# Vendor answers that say the request itself is wrong: another deployment would refuse it too.
_CLIENT_FAULTS = {400, 413, 422}


def fallback_allowed(error: UpstreamError) -> bool:
    """Whether a failed attempt may be retried on another deployment (before the first byte)."""
    if error.unsent:
        return True  # this deployment's model cannot take the request; another's may
    if error.vendor_status in _CLIENT_FAULTS or error.code == "content_filter":
        return False
    return True


def counts_against_deployment(error: UpstreamError) -> bool:
    """Whether a failed attempt counts toward its deployment's cooldown (``routing.health``):
    not when the router never sent the request (``UpstreamError.unsent``), the deployment
    being healthy; a vendor's refusal of the request itself never gets this far."""
    return not error.unsent

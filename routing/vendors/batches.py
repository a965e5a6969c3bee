"""What embedding adapters share: text inputs only, batches, and vendor calls run a few at a time.

A vendor whose embedding API takes one input per call, or a few dozen, gets one
``/v1/embeddings`` request as several calls. They run concurrently, at most
``CONCURRENT_CALLS`` at once so one request cannot take a vendor's whole rate limit; the
vectors come back in input order; the first failure cancels the calls still running and is
the request's failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from routing.errors import UpstreamError, unsupported_request
from routing.vendors.base import EmbeddingCall, Embeddings

T = TypeVar("T")
CONCURRENT_CALLS = 4  # vendor calls in flight for one embeddings request


def text_inputs(call: EmbeddingCall, vendor_name: str, model: str) -> tuple[str, ...]:
    """Return the call's inputs as strings; token arrays are refused (these models take text)."""
    inputs = call.inputs
    if all(isinstance(item, str) for item in inputs):
        return inputs  # type: ignore[return-value]
    raise unsupported_request(
        f"Vendor '{vendor_name}': model '{model}' takes text; the request's input was token arrays.",
        "it takes strings, not token arrays",
        "input",
    )


def fixed_dimensions(vendor_name: str, model: str) -> UpstreamError:
    """The refusal of ``dimensions`` for a model whose vectors have one size."""
    return unsupported_request(
        f"Vendor '{vendor_name}': model '{model}' has a fixed dimension count; the request set 'dimensions'.",
        "its vectors have one size: it does not take dimensions",
        "dimensions",
    )


def is_vector(value: Any) -> bool:
    """Whether a vendor's ``value`` is an embedding: a non-empty list of numbers."""
    return isinstance(value, list) and bool(value) and all(type(x) is float or type(x) is int for x in value)


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def budgeted(items: Sequence[str], size: int, budget: int, cost: Callable[[str], int]) -> list[Sequence[str]]:
    """Consecutive slices of at most ``size`` items whose ``cost`` sums to at most ``budget``
    (an item over the budget alone goes in a slice of its own: the vendor judges it)."""
    slices: list[Sequence[str]] = []
    start, spent = 0, 0
    for i, item in enumerate(items):
        price = cost(item)
        if i > start and (i - start == size or spent + price > budget):
            slices.append(items[start:i])
            start, spent = i, 0
        spent += price
    if start < len(items):
        slices.append(items[start:])
    return slices


def joined(answers: Sequence[tuple[list[list[float]], int | None]]) -> Embeddings:
    """The call's answer from its batches' (vectors, input tokens), in order; a count only if every batch had one."""
    counts = [count for _, count in answers]
    return Embeddings(
        [vector for vectors, _ in answers for vector in vectors],
        None if None in counts else sum(count or 0 for count in counts),
    )


async def run_bounded(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = CONCURRENT_CALLS) -> list[T]:
    """Await each call, at most ``limit`` at once; return their results in order.

    The first failure cancels the calls still running and is raised as itself (not in an
    exception group); cancellation from outside cancels them all.
    """
    factories = list(calls)
    if len(factories) == 1:
        return [await factories[0]()]
    gate = asyncio.Semaphore(limit)

    async def gated(factory: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await factory()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(factory)) for factory in factories]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]

"""The cancel scope every cancellation of a request goes through (``routing.relay.flow``).

Its bookkeeping is ``asyncio.timeout``'s: its own cancellation becomes ``Interrupted``, anyone
else's stays ``CancelledError``; nested scopes (the request's, a vendor attempt's ``Deadline``)
each take back only their own.
"""

from __future__ import annotations

import asyncio

import pytest

from routing.relay.flow import CancelScope, Deadline, Interrupted


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_cancel_from_elsewhere_interrupts_the_block_with_its_reason() -> None:
    async def main() -> str:
        scope = CancelScope()
        asyncio.get_running_loop().call_later(0.01, scope.cancel, "client_disconnected")
        with pytest.raises(Interrupted) as raised:
            async with scope:
                await asyncio.sleep(10)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        return raised.value.reason

    assert run(main()) == "client_disconnected"


def test_the_first_reason_wins() -> None:
    async def main() -> str:
        scope = CancelScope()

        def both() -> None:
            scope.cancel("client_stalled")
            scope.cancel("server_shutdown")

        asyncio.get_running_loop().call_later(0.01, both)
        with pytest.raises(Interrupted) as raised:
            async with scope:
                await asyncio.sleep(10)
        return raised.value.reason

    assert run(main()) == "client_stalled"


def test_a_cancel_from_elsewhere_stops_the_task_before_it_runs_again() -> None:
    """The client's disconnect noticed in the same turn as the vendor's next chunk: the task
    never resumes to hand that chunk to a server that would drop it."""

    async def request(scope: CancelScope, ran: list[str]) -> None:
        async with scope:
            await asyncio.sleep(0)
            ran.append("resumed")  # what would send the chunk

    async def main() -> list[str]:
        scope, ran = CancelScope(), list[str]()
        task = asyncio.create_task(request(scope, ran))
        await asyncio.sleep(0)  # the task waits; its wake-up is queued for this turn
        scope.cancel("client_disconnected")
        with pytest.raises(Interrupted):
            await task
        return ran

    assert run(main()) == []


def test_a_cancel_from_the_block_itself_arrives_at_its_next_await() -> None:
    async def main() -> list[str]:
        seen = []
        with pytest.raises(Interrupted):
            async with CancelScope() as scope:
                scope.cancel("deadline")
                seen.append("went on")  # the caller's own code is never cut in the middle
                await asyncio.sleep(10)
        return seen

    assert run(main()) == ["went on"]


def test_a_block_that_ends_before_its_cancel_arrives_ends_normally_and_leaves_no_cancel_behind() -> None:
    async def main() -> bool:
        async with CancelScope() as scope:
            scope.cancel("deadline")  # delivered on the loop's next turn: the block is over by then
        await asyncio.sleep(0.01)  # a stray cancellation would raise here
        return asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    assert run(main())


def test_cancelling_after_the_block_does_nothing() -> None:
    async def main() -> None:
        scope = CancelScope()
        async with scope:
            await asyncio.sleep(0)
        scope.cancel("client_disconnected")
        await asyncio.sleep(0.01)

    run(main())


def test_a_cancellation_from_outside_propagates_as_cancelled_error() -> None:
    async def request() -> None:
        async with CancelScope():
            await asyncio.sleep(10)

    async def main() -> bool:
        task = asyncio.create_task(request())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(main())


def test_outside_and_own_cancellation_together_stay_a_cancelled_error() -> None:
    async def request(scope: CancelScope) -> None:
        async with scope:
            await asyncio.sleep(10)

    async def main() -> bool:
        scope = CancelScope()
        task = asyncio.create_task(request(scope))
        await asyncio.sleep(0.01)
        scope.cancel("client_disconnected")  # delivered at once: from outside the block
        task.cancel()  # and the server's, before the task runs again
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(main())


def test_an_inner_deadline_is_its_own_and_leaves_the_outer_scope_running() -> None:
    async def main() -> list[str]:
        seen = []
        async with CancelScope():
            with pytest.raises(Interrupted) as raised:
                async with Deadline(0.01):
                    await asyncio.sleep(10)
            seen.append(raised.value.reason)
            await asyncio.sleep(0.01)  # the outer scope was not cancelled
            seen.append("outer goes on")
        return seen

    assert run(main()) == ["deadline", "outer goes on"]


def test_the_outer_scope_cancelled_inside_a_deadline_is_the_outer_one_s_interruption() -> None:
    async def main() -> str:
        outer = CancelScope()
        asyncio.get_running_loop().call_later(0.01, outer.cancel, "client_disconnected")
        with pytest.raises(Interrupted) as raised:
            async with outer:
                async with Deadline(10):
                    await asyncio.sleep(10)
        return raised.value.reason

    assert run(main()) == "client_disconnected"


def test_both_cancelled_at_once_the_outer_reason_reaches_the_caller() -> None:
    async def main() -> str:
        outer = CancelScope()
        inner = Deadline(10)

        def both() -> None:
            inner.cancel("deadline")
            outer.cancel("client_disconnected")

        asyncio.get_running_loop().call_later(0.01, both)
        with pytest.raises(Interrupted) as raised:
            async with outer:
                async with inner:
                    await asyncio.sleep(10)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        return raised.value.reason

    assert run(main()) == "client_disconnected"


def test_a_moved_deadline_fires_at_its_new_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Interrupted):
            async with Deadline(0.02) as deadline:
                deadline.move(loop.time() + 0.2)
                await asyncio.sleep(10)
        return loop.time() - started

    assert run(main()) >= 0.2

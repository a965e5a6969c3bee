"""Time the relay's two database writes per request alone: ``python -m bench.writes [--requests N]``.

Admits and settles N requests through ``request_admit`` and ``usage_record_settle`` on a
fresh SQLite database, in batches of 32 committed together by the group-commit writer's own
``_commit``, and prints the CPU and wall time per request. No
server, no network: it isolates the cost of the writes from the event loop and the machine's
load, so two versions of the code can be compared run against run. Part of the cost is per
batch (BEGIN, COMMIT, Django's atomic block): the live router at concurrency 32 commits about
9 writes a batch, so ``--batch 8`` is the closer figure for it. CPU includes SQLite's own work,
which runs without the GIL; ``py-spy record --gil`` shows the part that holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from decimal import Decimal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="siraya-writes-")
    os.environ["SIRAYA_VAR_DIR"] = workdir
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from billing.admission import request_admit
    from billing.selectors import api_key_load, authorization_hash
    from billing.services import api_key_create, generation_id_new
    from billing.settlement import Outcome, usage_record_settle
    from billing.writer import GroupWriter
    from routing.selectors import model_route
    from routing.services import model_create, vendor_create

    call_command("migrate", verbosity=0, interactive=False)
    vendor = vendor_create("fake", "openai", "http://127.0.0.1:9/v1", credentials={"api_key": "sk-x"})
    model_create("bench/writes", deployments=[(vendor, "fake", 0, 1)], input_price=Decimal(1), output_price=Decimal(2))
    _, plaintext = api_key_create("bench")
    key = api_key_load(authorization_hash(f"Bearer {plaintext}"))
    assert key is not None
    route = model_route("bench/writes")
    assert route is not None
    target = route.targets[0]

    writer = GroupWriter()
    loop = asyncio.new_event_loop()

    def batch_run(works: list) -> list:
        """Commit ``works`` as one batch of the group-commit writer (this thread)."""
        futures = [loop.create_future() for _ in works]
        writer._commit([(work, loop, future) for work, future in zip(works, futures, strict=True)])
        loop.run_until_complete(asyncio.sleep(0))
        return [future.result() for future in futures]

    def run(requests: int) -> None:
        done = 0
        while done < requests:
            n = min(args.batch, requests - done)
            admissions = batch_run(
                [
                    lambda: request_admit(key, generation_id_new(), (route,), False, None, target.answerer())
                    for _ in range(n)
                ]
            )
            outcomes = []
            for admission in admissions:
                outcome = Outcome(status="completed", http_status=200, vendor_prompt_tokens=12)
                outcome.vendor_completion_tokens, outcome.delivered_text = 16, "hello " * 16
                # As the relay fills it in (routing.relay.request): the deployment that answered.
                outcome.deployment_id, outcome.upstream_model = target.deployment_id, target.upstream_model
                outcome.vendor_id, outcome.vendor_name = target.vendor.id, target.vendor.name
                outcomes.append((admission.record_id, outcome))
            batch_run([lambda r=r, o=o: usage_record_settle(r, o) for r, o in outcomes])
            done += n

    run(200)  # warm up: tokenizer tables, statement caches
    done = args.requests
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run(done)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(
        f"{done} requests, batches of {args.batch}: {cpu / done * 1e6:.0f} us CPU and "
        f"{wall / done * 1e6:.0f} us wall per request (admission + settlement)"
    )


if __name__ == "__main__":
    main()

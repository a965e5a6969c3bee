"""Stored responses in process: what ``store`` keeps, what each key sees, ``previous_response_id``,
the input items' pages, deletion and retention, with scripted vendors behind the real relay."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from billing.models import UsageRecord, UsageStatus
from billing.services import api_key_create
from lib import tokens
from routing.dialects.responses.memory import stored_response_settled
from routing.dialects.responses.objects import generation_of
from routing.models import StoredResponse
from routing.services import stored_response_save
from routing.tests.inprocess import Script, answer, answer_text, failure
from routing.vendors.base import Usage

PATH = "/v1/responses"


def post(relay, stream: bool = False, key: str | None = None, **body: Any):
    body.setdefault("model", "m")
    body.setdefault("input", "Tell me a story.")
    return relay.exchange(orjson.dumps({**body, "stream": stream}), key=key, path=PATH)


def get(relay, path: str, key: str | None = None, query: str = "", method: str = "GET"):
    return relay.exchange(b"", key=key, path=path, method=method, query=query.encode())


def completed(seen) -> dict[str, Any]:
    """The Response object of a stream's last event."""
    last = seen.raw.strip().split(b"\n\n")[-1].split(b"\n")
    return orjson.loads(last[1].removeprefix(b"data: "))["response"]


def other_key() -> str:
    return api_key_create("someone else")[1]


def test_whole_answer_is_stored_as_the_client_got_it_with_its_input_items(relay):
    relay.deploy("m", Script("v", answer(3, usage=Usage(9, 3))))
    seen = post(relay, instructions="Be brief.", metadata={"ticket": "7"})
    body = seen.json()
    assert body["store"] is True
    fetched = get(relay, f"{PATH}/{body['id']}")
    assert fetched.status == 200 and fetched.json() == body
    items = get(relay, f"{PATH}/{body['id']}/input_items").json()
    suffix = body["id"].removeprefix("resp_")
    message = {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}],
        "id": f"msg_{suffix}_in0", "status": "completed",
    }  # fmt: skip
    assert items == {"object": "list", "data": [message], "first_id": message["id"], "last_id": message["id"], "has_more": False}  # fmt: skip
    (stored,) = StoredResponse.objects.all()
    assert (stored.id, stored.api_key_id, stored.model_name) == (body["id"], relay.api_key.id, "m")
    assert stored.created_at == datetime.fromtimestamp(body["created_at"], UTC)
    assert relay.record(generation_of(body["id"])).generation_id == generation_of(stored.id)  # the same request


def test_streamed_answer_is_stored_as_its_completed_event_says(relay):
    relay.deploy("m", Script("v", answer(4, usage=Usage(9, 4))))
    seen = post(relay, stream=True)
    done = completed(seen)
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == answer_text(4)
    assert get(relay, f"{PATH}/{done['id']}").json() == done


def test_failure_mid_stream_is_stored_as_the_failed_response(relay):
    relay.deploy("m", Script("v", answer(3)[:-1], error=failure(500)))
    seen = post(relay, stream=True)
    failed = completed(seen)
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_error"
    assert get(relay, f"{PATH}/{failed['id']}").json() == failed


def test_store_false_keeps_nothing_and_answers_as_for_an_unknown_id(relay):
    relay.deploy("m", Script("v", answer(2)))
    body = post(relay, store=False).json()
    assert body["store"] is False
    assert not StoredResponse.objects.exists()
    missing = get(relay, f"{PATH}/{body['id']}")
    assert missing.status == 404
    assert missing.json() == {
        "error": {
            "message": f"Response with id '{body['id']}' not found.",
            "type": "not_found_error",
            "code": "response_not_found",
            "param": None,
        }
    }
    continued = post(relay, previous_response_id=body["id"])
    assert continued.status == 404 and continued.json()["error"]["code"] == "previous_response_not_found"


def test_another_key_sees_no_stored_response_and_cannot_delete_it(relay):
    relay.deploy("m", Script("v", answer(2)))
    response_id = post(relay).json()["id"]
    other = other_key()
    unknown = get(relay, f"{PATH}/resp_0000000000000000000000000000", key=other)
    for seen in (
        get(relay, f"{PATH}/{response_id}", key=other),
        get(relay, f"{PATH}/{response_id}/input_items", key=other),
        get(relay, f"{PATH}/{response_id}", key=other, method="DELETE"),
    ):
        assert seen.status == 404 == unknown.status
        # The same words as for an id that does not exist, its own id aside.
        assert seen.json()["error"]["message"].replace(response_id, "?") == unknown.json()["error"]["message"].replace(
            "resp_0000000000000000000000000000", "?"
        )
    continued = post(relay, key=other, previous_response_id=response_id)
    assert continued.status == 404
    assert continued.json()["error"] == {
        "message": f"Previous response with id '{response_id}' not found.",
        "type": "not_found_error",
        "code": "previous_response_not_found",
        "param": "previous_response_id",
    }
    assert get(relay, f"{PATH}/{response_id}").status == 200  # still there for its own key
    assert get(relay, f"{PATH}/{response_id}", key="").status == 401


def test_delete_answers_deleted_and_the_response_is_gone(relay):
    relay.deploy("m", Script("v", answer(2)))
    response_id = post(relay).json()["id"]
    deleted = get(relay, f"{PATH}/{response_id}", method="DELETE")
    assert (deleted.status, deleted.json()) == (200, {"id": response_id, "object": "response", "deleted": True})
    assert get(relay, f"{PATH}/{response_id}").status == 404
    assert get(relay, f"{PATH}/{response_id}", method="DELETE").status == 404
    assert get(relay, f"{PATH}/{response_id}", method="POST").status == 405


def test_previous_response_id_sends_its_input_and_output_before_the_new_input(relay):
    script = Script("v", answer(3))
    relay.deploy("m", script)
    first = post(relay, instructions="Old rules.", input="Hello").json()
    second = post(relay, instructions="New rules.", input="And then?", previous_response_id=first["id"]).json()
    assert second["previous_response_id"] == first["id"] and second["status"] == "completed"
    sent = script.calls[-1].request.messages
    assert sent == [
        {"role": "system", "content": "New rules."},  # the previous instructions are not carried over
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer_text(3)}]},
        {"role": "user", "content": "And then?"},
    ]
    # The router counted the whole prompt it sent (the vendor reported no usage).
    record = relay.record(generation_of(second["id"]))
    assert record.prompt_tokens == tokens.count_messages(sent, "cl100k_base") == second["usage"]["input_tokens"]
    # Its input items: the previous input and output, then its own; a third turn continues them all.
    items = get(relay, f"{PATH}/{second['id']}/input_items", query="order=asc").json()["data"]
    assert [item["id"] for item in items] == [
        f"msg_{first['id'].removeprefix('resp_')}_in0",
        first["output"][0]["id"],
        f"msg_{second['id'].removeprefix('resp_')}_in0",
    ]
    post(relay, input="Last one.", previous_response_id=second["id"])
    assert [m["role"] for m in script.calls[-1].request.messages] == ["user", "assistant", "user", "assistant", "user"]


def test_a_streamed_first_turn_is_continued(relay):
    script = Script("v", answer(2))
    relay.deploy("m", script)
    first = completed(post(relay, stream=True, input="Hi"))
    second = post(relay, stream=True, input="More", previous_response_id=first["id"])
    assert completed(second)["status"] == "completed"
    assert [m["role"] for m in script.calls[-1].request.messages] == ["user", "assistant", "user"]


def test_the_credit_hold_counts_the_previous_input(relay):
    """A short new input alone fits the credit left; with a long stored conversation before it, it does not."""
    key = api_key_create("limited", credit_limit=Decimal("0.5"))[1]
    relay.deploy("m", Script("v", answer(1)), price="1000")  # USD 0.001 per prompt token
    long_input = " ".join(["word"] * 300)
    first = post(relay, key=key, input=long_input, max_output_tokens=16)
    assert first.status == 200
    refused = post(relay, key=key, input="Go on.", max_output_tokens=16, previous_response_id=first.json()["id"])
    assert refused.status == 402
    assert post(relay, key=key, input="Go on.", max_output_tokens=16).status == 200


def test_the_token_rate_limit_counts_the_previous_input(relay):
    key = api_key_create("limited", tokens_per_minute=280)[1]
    relay.deploy("m", Script("v", answer(1)))
    first = post(relay, key=key, input=" ".join(["word"] * 150), max_output_tokens=1)
    assert first.status == 200
    refused = post(relay, key=key, input="Go on.", max_output_tokens=1, previous_response_id=first.json()["id"])
    assert refused.status == 429
    assert post(relay, key=key, input="Go on.", max_output_tokens=1).status == 200


def test_input_items_pages(relay):
    relay.deploy("m", Script("v", answer(1)))
    given = [{"role": "user", "content": f"line {n}"} for n in range(5)]
    response_id = post(relay, input=given).json()["id"]
    path = f"{PATH}/{response_id}/input_items"
    ids = [item["id"] for item in get(relay, path, query="order=asc").json()["data"]]
    assert len(ids) == 5 and len(set(ids)) == 5
    newest = get(relay, path, query="limit=2").json()  # desc by default
    assert [i["id"] for i in newest["data"]] == ids[:-3:-1] and newest["has_more"] is True
    assert (newest["first_id"], newest["last_id"]) == (ids[4], ids[3])
    after = get(relay, path, query=f"limit=2&after={newest['last_id']}").json()
    assert [i["id"] for i in after["data"]] == [ids[2], ids[1]] and after["has_more"] is True
    rest = get(relay, path, query=f"order=asc&after={ids[2]}").json()
    assert [i["id"] for i in rest["data"]] == ids[3:] and rest["has_more"] is False
    before = get(relay, path, query=f"order=asc&limit=2&before={ids[3]}").json()
    assert [i["id"] for i in before["data"]] == ids[1:3] and before["has_more"] is True
    assert get(relay, path, query="limit=100").json()["data"][0]["content"] == [
        {"type": "input_text", "text": "line 4"}
    ]


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("order=up", "order"), ("after=no", "after")],
)
def test_input_items_refuses_bad_parameters(relay, query, param):
    relay.deploy("m", Script("v", answer(1)))
    response_id = post(relay).json()["id"]
    seen = get(relay, f"{PATH}/{response_id}/input_items", query=query)
    assert seen.status == 400 and seen.json()["error"]["param"] == param


def test_input_items_keep_their_ids_and_full_form(relay):
    relay.deploy("m", Script("v", answer(1)))
    given = [
        {"type": "message", "role": "assistant", "content": "Earlier answer."},
        {"type": "function_call", "id": "fc_given", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    response_id = post(relay, input=given).json()["id"]
    items = get(relay, f"{PATH}/{response_id}/input_items", query="order=asc").json()["data"]
    assert items[0]["content"] == [
        {"type": "output_text", "text": "Earlier answer.", "annotations": [], "logprobs": []}
    ]
    assert items[1]["id"] == "fc_given" and items[1]["status"] == "completed"
    assert items[2]["id"].startswith("fco_") and items[2]["output"] == "42"


def _stored(key_id: int, response_id: str, created: datetime) -> None:
    response = {"id": response_id, "object": "response", "model": "m", "created_at": int(created.timestamp())}
    stored_response_save(key_id, response, [])


def test_prune_deletes_responses_past_the_retention(relay, settings):
    now = datetime.now(UTC)
    _stored(relay.api_key.id, "resp_old", now - timedelta(days=31))
    _stored(relay.api_key.id, "resp_recent", now - timedelta(days=29))
    out = StringIO()
    call_command("responses", "prune", stdout=out)  # SIRAYA_RESPONSES_RETENTION_DAYS: 30 by default
    assert out.getvalue().startswith("1 stored response(s) created before")
    assert list(StoredResponse.objects.values_list("id", flat=True)) == ["resp_recent"]
    settings.SIRAYA_RESPONSES_RETENTION_DAYS = 7
    call_command("responses", "prune", stdout=StringIO())
    assert not StoredResponse.objects.exists()
    _stored(relay.api_key.id, "resp_day", now - timedelta(days=2))
    call_command("responses", "prune", "--older-than-days", "3", stdout=StringIO())
    assert StoredResponse.objects.count() == 1


def test_a_lookup_waits_for_a_response_whose_request_is_still_finishing(relay):
    """Asked again the moment the answer arrived: the usage record is still in progress and the
    response not yet written; the lookup waits for it instead of answering 404."""
    record = UsageRecord.objects.create(
        generation_id="gen-finishing", api_key=relay.api_key, model_name="m", created_at=timezone.now()
    )
    assert record.status == UsageStatus.IN_PROGRESS
    writer = threading.Timer(0.2, _stored_then_settled, (relay.api_key.id, record.id))
    writer.start()
    try:
        found = stored_response_settled(relay.api_key.id, "resp_finishing")
    finally:
        writer.join()
    assert found is not None and found.id == "resp_finishing"
    # Settled, and nothing stored under that id: not found, without waiting.
    assert stored_response_settled(relay.api_key.id, "resp_other") is None


def test_a_lookup_finds_a_response_stored_and_settled_between_its_two_reads(relay):
    """The request finishes between the lookup's read of the stored responses (none yet) and its
    read of the usage record (settled): the response exists, so the lookup must not say 404."""
    record = UsageRecord.objects.create(
        generation_id="gen-between", api_key=relay.api_key, model_name="m", created_at=timezone.now()
    )
    finished = False

    def finish_after_first_read(execute, sql, params, many, context):
        nonlocal finished
        result = execute(sql, params, many, context)
        if not finished and "routing_storedresponse" in sql:
            finished = True
            _stored(relay.api_key.id, "resp_between", datetime.now(UTC))
            UsageRecord.objects.filter(id=record.id).update(status=UsageStatus.COMPLETED)
        return result

    with connection.execute_wrapper(finish_after_first_read):
        found = stored_response_settled(relay.api_key.id, "resp_between")
    assert finished
    assert found is not None and found.id == "resp_between"


def _stored_then_settled(key_id: int, record_id: int) -> None:
    try:
        _stored(key_id, "resp_finishing", datetime.now(UTC))
        UsageRecord.objects.filter(id=record_id).update(status=UsageStatus.COMPLETED)
    finally:
        connections.close_all()


class Kept(logging.Handler):
    """The records one logger emits (each exchange sets Django up again, which replaces the
    root logger's handlers: caplog's would miss some)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_failed_store_write_is_logged_and_the_answer_is_whole(relay):
    """The table gone from under the router: every answer still reaches its client whole, and is billed."""
    relay.deploy("m", Script("v", answer(3, usage=Usage(9, 3))))
    table = StoredResponse._meta.db_table
    logger, kept = logging.getLogger("siraya.relay"), Kept()
    logger.addHandler(kept)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        streamed = post(relay, stream=True)
        whole = post(relay)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        logger.removeHandler(kept)
    done = completed(streamed)
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == answer_text(3)
    assert whole.status == 200 and whole.json()["output"][0]["content"][0]["text"] == answer_text(3)
    for response_id in (done["id"], whole.json()["id"]):
        assert relay.record(generation_of(response_id)).status == "completed"
    failures = [r for r in kept.records if r.getMessage() == "could not store the response"]
    assert [r.generation_id for r in failures] == [generation_of(done["id"]), generation_of(whole.json()["id"])]  # type: ignore[attr-defined]
    assert not StoredResponse.objects.exists()


def test_an_id_no_response_can_have_is_not_found(relay):
    """A NUL in an id (PostgreSQL refuses it in any query) is a 404 like any unknown id, not a 500."""
    relay.deploy("m", Script("v", answer(1)))
    for method, path in (("GET", f"{PATH}/gen-\x00"), ("GET", f"{PATH}/gen-\x00/input_items"), ("DELETE", f"{PATH}/gen-\x00")):  # fmt: skip
        seen = get(relay, path, method=method)
        assert seen.status == 404 and seen.json()["error"]["code"] == "response_not_found"
    continued = post(relay, previous_response_id="gen-\x00")
    assert continued.status == 404 and continued.json()["error"]["code"] == "previous_response_not_found"
    assert get(relay, "/v1/generation", query="id=gen-%00").status == 404

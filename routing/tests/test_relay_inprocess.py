from __future__ import annotations

from routing.tests.inprocess import Script, answer, answer_text
from routing.vendors.base import Usage


def test_smoke(relay):
    relay.deploy("m", Script("one", answer(3, usage=Usage(5, 3))))
    seen = relay.chat(stream=True)
    assert seen.status == 200, seen.raw
    assert seen.text() == answer_text(3)
    record = relay.record(seen.generation_id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", 5, 3)

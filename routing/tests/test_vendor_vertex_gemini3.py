"""Vertex AI end to end, Gemini 3's thought signatures: kept through tool round trips, or Google's skip value.

``vertex_casts`` (``routing/tests/conftest.py``) routes ``test/gemini`` and ``test/claude`` to
one Vertex vendor with a service-account key the fake trusts.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from openai import OpenAI

from conftest import Cast
from fakevendors.openai import words
from routing.models import Vendor
from routing.services import model_create
from routing.tests.sse_client import content_of
from routing.tests.vendor_cast import sse_chunks, tool_calls_of
from routing.tests.vertex_helpers import WEATHER_TOOL


@pytest.fixture
def gemini3(vertex_casts):
    """``test/gemini3``: a Gemini 3 model on the same Vertex vendor (thought signatures enforced)."""
    vendor = Vendor.objects.get(name="vertex")
    prices = {"input_price": Decimal("1"), "output_price": Decimal("2")}
    model_create("test/gemini3", deployments=[(vendor, "gemini-3-pro-preview", 0, 1)], **prices)
    gemini = vertex_casts["gemini"]
    return Cast(gemini.url, gemini.key, gemini.api_key, "test/gemini3")


def test_gemini3_thought_signature_survives_a_tool_round_trip_through_the_openai_sdk(gemini3, fake_vertex):
    fake_vertex.scenario.tool_call = True
    client = OpenAI(base_url=gemini3.url + "/v1", api_key=gemini3.key)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    message = client.chat.completions.create(model=gemini3.model, messages=ask, tools=[WEATHER_TOOL]).choices[0].message
    (call,) = message.tool_calls
    signature = call.model_extra["extra_content"]["google"]["thought_signature"]
    assert signature in fake_vertex.thought_signatures
    # The application sends the assistant message back as the SDK gave it, then the tool result.
    history = [*ask, message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "21"}]
    answer = client.chat.completions.create(model=gemini3.model, messages=history, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "".join(words(5))
    (part,) = fake_vertex.api_requests[-1].json()["contents"][1]["parts"]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": signature}


def test_gemini3_streamed_tool_call_carries_its_thought_signature(gemini3, fake_vertex):
    fake_vertex.scenario.tool_call = True
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    response = gemini3.chat(messages=ask, tools=[WEATHER_TOOL], stream=True)
    (call,) = tool_calls_of(sse_chunks(response.text))
    signature = call["extra_content"]["google"]["thought_signature"]
    assert signature in fake_vertex.thought_signatures
    call.pop("index")
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": call["id"], "content": "21"}]  # fmt: skip
    response = gemini3.chat(messages=history, tools=[WEATHER_TOOL], stream=True)
    assert "".join(content_of(chunk) for chunk in sse_chunks(response.text)) == "".join(words(5))
    assert fake_vertex.api_requests[-1].json()["contents"][1]["parts"][0]["thoughtSignature"] == signature


def test_gemini3_history_with_calls_no_gemini_signed_gets_googles_skip_value(gemini3, fake_vertex):
    """Calls another model made (before a fallback to Gemini, say) carry no signature: the first
    call of the turn gets Google's documented skip value instead of a 400."""
    calls = [
        {"id": f"call_{city}", "type": "function",
         "function": {"name": "get_weather", "arguments": orjson.dumps({"city": city}).decode()}}
        for city in ("Paris", "Oslo")
    ]  # fmt: skip
    history = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "21"} for c in calls),
    ]
    response = gemini3.chat(messages=history, tools=[WEATHER_TOOL])
    assert response.status_code == 200, response.text
    first, second = fake_vertex.api_requests[-1].json()["contents"][1]["parts"]
    assert first["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in second  # parallel calls: Gemini signs the first only

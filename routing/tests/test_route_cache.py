"""Routes are cached in process, and a price change still reaches the requests that start after it."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from conftest import make_cast, wait_settled
from routing import routes
from routing.models import RouterModel
from routing.services import model_create, vendor_create

BOUND = 0.5  # SIRAYA_ROUTE_CACHE_SECONDS of the router under test


def _chat(cast) -> str:
    response = cast.chat(max_tokens=2)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_price_change_in_another_process_applies_within_the_cache_bound(server_factory, fake_openai, transactional_db):
    router = server_factory({"SIRAYA_ROUTE_CACHE_SECONDS": str(BOUND)})
    cast = make_cast(router.url, fake_openai.url + "/v1")
    before = _chat(cast)
    RouterModel.objects.filter(name=cast.model).update(input_price=Decimal("7"), output_price=Decimal("9"))
    time.sleep(BOUND + 0.2)
    after = _chat(cast)
    assert cast.record(before).input_price == Decimal("1")
    record = cast.record(after)
    assert (record.input_price, record.output_price) == (Decimal("7"), Decimal("9"))
    wait_settled()


def test_disabling_a_model_in_another_process_refuses_requests_after_the_bound(
    server_factory, fake_openai, transactional_db
):
    router = server_factory({"SIRAYA_ROUTE_CACHE_SECONDS": str(BOUND)})
    cast = make_cast(router.url, fake_openai.url + "/v1")
    _chat(cast)
    RouterModel.objects.filter(name=cast.model).update(enabled=False)
    time.sleep(BOUND + 0.2)
    response = cast.chat(max_tokens=2)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    wait_settled()


@pytest.mark.django_db
def test_saving_a_model_in_this_process_drops_the_cached_route(settings):
    settings.SIRAYA_ROUTE_CACHE_SECONDS = 3600
    routes.route_cache_clear()
    vendor = vendor_create("v1", "openai", "http://127.0.0.1:9/v1", credentials={"api_key": "sk-x"})
    model = model_create("m/cached", deployments=[(vendor, "up", 0, 1)], input_price=Decimal("1"))
    first = routes.model_route_cached("m/cached")
    assert first is not None and first.prices.input == Decimal("1")
    assert routes.model_route_cached("m/cached") is first  # served from the cache
    model.input_price = Decimal("4")
    model.save()
    second = routes.model_route_cached("m/cached")
    assert second is not None and second.prices.input == Decimal("4")
    routes.route_cache_clear()

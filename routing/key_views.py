from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from billing.cost import COST_PLACES
from billing.models import UsageRecord
from billing.selectors import KeyInfo, UsageTotals, key_overview, usage_record_for_key
from routing.api import api_view
from routing.errors import RouterError, client_attempts, client_error_message


def generation_body(record: UsageRecord) -> dict[str, object]:
    return {
        "id": record.generation_id,
        "api": record.api,
        "model": record.model_name,
        "status": record.status,
        "streamed": record.streamed,
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "vendor": record.vendor_name or None,
        "upstream_model": record.upstream_model or None,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "usage_source": record.usage_source,
        "vendor_reported": {
            "prompt_tokens": record.vendor_prompt_tokens,
            "completion_tokens": record.vendor_completion_tokens,
        },
        "tokens_delivered": record.tokens_delivered,
        "cost": format(record.cost, "f"),
        "currency": "USD",
        "finish_reason": record.finish_reason or None,
        "http_status": record.http_status,
        "error": {
            "code": record.error_code,
            "message": client_error_message(record.error_code, record.error_message, record.attempts),
        }
        if record.error_code
        else None,
        "timings": {"first_token_ms": record.first_token_ms, "total_ms": record.duration_ms},
        "attempts": client_attempts(record.attempts),
    }


@api_view()
def generation_detail(request: HttpRequest, key: KeyInfo) -> JsonResponse:
    """``GET /v1/generation?id=gen-...``: one usage record of the calling key."""
    generation_id = request.GET.get("id", "")
    if not generation_id:
        raise RouterError(400, "Query parameter 'id' is required.", code="missing", param="id")
    record = usage_record_for_key(key.id, generation_id)
    if record is None:
        raise RouterError(
            404, f"No generation '{generation_id[:64]}' for this key.", code="generation_not_found", param="id"
        )
    return JsonResponse({"data": generation_body(record)})


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else format(amount.quantize(COST_PLACES), "f")


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _totals_body(totals: UsageTotals) -> dict[str, object]:
    return {
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "total_tokens": totals.prompt_tokens + totals.completion_tokens,
        "cost": _money(totals.cost),
    }


@api_view()
def key_detail(request: HttpRequest, key: KeyInfo) -> JsonResponse:
    """``GET /v1/key``: the calling key's limit, spend, what is left, rate limits and recent totals."""
    overview = key_overview(key.id, timezone.now())
    return JsonResponse(
        {
            "data": {
                "name": overview.name,
                "prefix": overview.prefix,
                "currency": "USD",
                "credit_limit": _money(overview.credit_limit),
                "limit_reset": overview.limit_reset,
                "period": {"start": _when(overview.period_start), "resets_at": _when(overview.period_end)},
                "spend": _money(overview.spend),
                "reserved": _money(overview.held),
                "remaining": _money(overview.remaining),
                "rate_limits": {
                    "requests_per_minute": overview.requests_per_minute,
                    "tokens_per_minute": overview.tokens_per_minute,
                },
                "usage": {
                    "today": _totals_body(overview.today),
                    "this_week": _totals_body(overview.this_week),
                    "this_month": _totals_body(overview.this_month),
                },
            }
        }
    )

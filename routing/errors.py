"""OpenAI-shaped errors: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

from typing import Any

import orjson

from billing.shared_redis import RATE_LIMIT, STREAM_SLOTS
from lib.redisclient import RedisUnavailable

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class RouterError(Exception):
    """An error the client should see, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def json(self) -> bytes:
        return orjson.dumps(self.body())


class UpstreamError(RouterError):
    """The vendor failed. ``retryable`` says whether another deployment may be tried."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        vendor_status: int | None = None,
    ) -> None:
        super().__init__(status, message, code=code)
        self.retryable = retryable
        self.retry_after = retry_after
        self.vendor_status = vendor_status


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> RouterError:
    return RouterError(400, message, code=code, param=param)


# What a client is told when a limit that fails closed cannot be checked (billing.shared_redis).
_UNAVAILABLE = {
    RATE_LIMIT: ("rate_limiter_unavailable", "The rate limiter is unavailable; try again shortly."),
    STREAM_SLOTS: ("stream_limiter_unavailable", "The concurrent-stream limiter is unavailable; try again shortly."),
}


def limiter_unavailable(error: RedisUnavailable) -> RouterError:
    """The 503 for a limit that could not be checked; the Redis URL and its failure stay in the log."""
    code, message = _UNAVAILABLE.get(
        error.feature, ("service_unavailable", "A service the router needs is unavailable; try again shortly.")
    )
    return RouterError(503, message, code=code, headers={"Retry-After": "1"})


def no_eligible_deployment(model: str) -> RouterError:
    """``provider.order`` with fallbacks forbidden names no vendor that serves the request's models."""
    return invalid(
        f"No vendor named in 'provider.order' serves the model '{model}' (or its 'models' fallbacks), "
        "and 'provider.allow_fallbacks' is false.",
        "provider.order",
        "no_eligible_provider",
    )

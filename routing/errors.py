"""OpenAI-shaped errors: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

from typing import Any

import orjson

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

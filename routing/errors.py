"""Errors a client sees, and the domain refusals mapped to them.

``RouterError`` is an error answered to a client: a status, the router's stable ``code``, the
router's own words and the offending ``param``. Each client API renders it in its own shape
(``routing.dialects``); ``body()`` is the OpenAI shape, which the router's own endpoints use.
Domain code raises refusals that carry data (``billing.errors``, ``RoutingRefusal`` here);
``refusal_error`` is the one place that gives them a status.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from billing.errors import (
    BillingRefusal,
    CreditExceeded,
    DatabaseUnavailable,
    KeyRefused,
    LimiterUnavailable,
    RateLimited,
    StreamCapReached,
)

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


# The router's own words for each class of vendor failure: what a client sees, whatever the
# vendor said. Vendors' messages name the operator's organisation, project or account and
# may quote credentials; they go to the log, the usage record and the admin, never here.
UPSTREAM_MESSAGES: dict[str, str] = {
    "upstream_error": "The vendor could not serve this request.",
    "upstream_rate_limited": "The vendor is rate limiting requests; retry later.",
    "upstream_invalid_request": "The vendor rejected the request as invalid.",
    "unsupported_request": "This model cannot take the request as sent.",
    "upstream_timeout": "The vendor did not answer in time.",
    "upstream_unreachable": "The router could not reach the vendor.",
    "upstream_malformed": "The vendor sent an answer the router could not read.",
    "upstream_truncated": "The vendor ended the answer before it was complete.",
    "content_filter": "The request was blocked by the vendor's content filter.",
    "vendor_auth_failed": "The vendor rejected the router's credentials; the operator must fix them.",
    "upstream_model_unavailable": "The vendor does not serve the model configured for this deployment.",
    "unsupported_upstream_model": "This deployment's upstream model is not supported by its vendor.",
    "vendor_host_refused": "The vendor is configured with an address this router does not send requests to.",
    "vendor_account_refused": "The vendor refused the request for a reason on the operator's side; the operator must resolve it.",
}
# Refusals that describe the operator's account with the vendor (a balance, credits, access):
# the client gets one code for all of them; the specific one stays in ``vendor_code``.
_ACCOUNT_CODES = frozenset({"vendor_account_overdue", "vendor_access_denied", "vendor_insufficient_credits"})
# The class code of a client status when the failure has no code of the router's own.
_CLASS_CODES = {400: "upstream_invalid_request", 429: "upstream_rate_limited", 504: "upstream_timeout"}
# A note is the router's own qualifier (a phase, a filter category): short words only.
_NOTE = re.compile(r"[A-Za-z0-9_ ,.:-]{1,80}")


def upstream_code(status: int, code: str | None) -> str:
    """Return the router's stable code for a vendor failure with client ``status`` and ``code``."""
    if code in UPSTREAM_MESSAGES:
        return code
    if code in _ACCOUNT_CODES:
        return "vendor_account_refused"
    return _CLASS_CODES.get(status, "upstream_error")


class UpstreamError(RouterError):
    """The vendor failed. ``retryable`` says whether another deployment may be tried.

    ``detail`` is the operator's account of the failure, possibly quoting the vendor: it goes
    to the log, the usage record and the admin (redacted by the relay). The client sees
    ``message``: the router's own text for the error's class (``UPSTREAM_MESSAGES``), plus an
    optional ``note`` of the router's own words. ``code`` is the router's stable code; the
    vendor's own code, when it had one, is kept in ``vendor_code``.

    ``unsent``: the router never sent the request, because it asks for what this deployment's
    upstream model cannot do (``unsupported_request``). The deployment is healthy: another one
    may serve the request, and the refusal does not count toward its cooldown
    (``routing.selection.counts_against_deployment``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        code: str | None = None,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        vendor_status: int | None = None,
        note: str | None = None,
        param: str | None = None,
        unsent: bool = False,
    ) -> None:
        public = upstream_code(status, code)
        message = UPSTREAM_MESSAGES[public]
        if note and _NOTE.fullmatch(note):
            message = f"{message[:-1]} ({note})."
        super().__init__(status, message, code=public, param=param)
        self.detail = detail
        self.vendor_code = str(code) if code is not None and code != public else None
        self.retryable = retryable
        self.retry_after = retry_after
        self.vendor_status = vendor_status
        self.unsent = unsent

    def __str__(self) -> str:
        return self.message


def unsupported_request(detail: str, note: str, param: str) -> UpstreamError:
    """The router's refusal to send a deployment a request its upstream model cannot take
    (``note`` and ``param`` say what, in the client's terms); ``detail`` names the deployment."""
    return UpstreamError(400, detail, code="unsupported_request", note=note, param=param, unsent=True)


# What a client may see of each attempt a usage record keeps: the router's own status and
# code, never the vendor's words, code or status (kept for the operator: the log, the admin).
CLIENT_ATTEMPT_FIELDS = ("deployment", "vendor", "upstream_model", "outcome", "latency_ms", "status", "code")


def client_error_message(code: str, recorded: str, attempts: Any = ()) -> str:
    """The message a client may see for a request that failed with ``code``: for a vendor
    failure, the router's own text for its class (the record's message is the vendor's
    account, for the operator). A record written before vendor codes were mapped to the
    router's (its last attempt failed with the record's code) gets its class's text too."""
    if code in UPSTREAM_MESSAGES:
        return UPSTREAM_MESSAGES[code]
    last = attempts[-1] if isinstance(attempts, list) and attempts else None
    if isinstance(last, dict) and last.get("outcome") == "error" and last.get("code") == code:
        status = last.get("status")
        return UPSTREAM_MESSAGES[upstream_code(status if isinstance(status, int) else 502, None)]
    return recorded


def client_attempts(attempts: Any) -> list[dict[str, Any]]:
    """A usage record's attempts as a client may see them."""
    if not isinstance(attempts, list):
        return []
    return [{k: v for k, v in a.items() if k in CLIENT_ATTEMPT_FIELDS} for a in attempts if isinstance(a, dict)]


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> RouterError:
    return RouterError(400, message, code=code, param=param)


class RoutingRefusal(Exception):
    """A request routing cannot serve as asked; carries data, not a status (``refusal_error``)."""

    code = "refused"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnknownModel(RoutingRefusal):
    code = "model_not_found"

    def __init__(self, name: str, param: str = "model") -> None:
        super().__init__(f"The model '{name}' does not exist or is disabled.", param)
        self.name = name


class NoDeployment(RoutingRefusal):
    code = "no_deployment"

    def __init__(self, name: str) -> None:
        super().__init__(f"The model '{name}' has no enabled deployment.", "model")
        self.name = name


class NoEligibleProvider(RoutingRefusal):
    """``provider.order`` with fallbacks forbidden names no vendor that serves the request's models."""

    code = "no_eligible_provider"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"No vendor named in 'provider.order' serves the model '{name}' (or its 'models' fallbacks), "
            "and 'provider.allow_fallbacks' is false.",
            "provider.order",
        )
        self.name = name


class WrongModelMode(RoutingRefusal):
    """The request's API does not serve the model's mode (a chat request to an embedding model, or the reverse)."""

    code = "model_mode_mismatch"

    def __init__(self, name: str, mode: str, param: str = "model") -> None:
        api = (
            "/v1/embeddings"
            if mode == "embedding"
            else "a chat API (/v1/chat/completions, /v1/messages, /v1/responses)"
        )
        article = "an" if mode[:1] in "aeiou" else "a"
        super().__init__(f"The model '{name}' is {article} {mode} model: ask it through {api}.", param)
        self.name = name
        self.mode = mode


Refusal = BillingRefusal | RoutingRefusal
REFUSALS = (BillingRefusal, RoutingRefusal)
_REFUSAL_STATUS: dict[type[Exception], int] = {
    KeyRefused: 401,
    CreditExceeded: 402,
    RateLimited: 429,
    StreamCapReached: 429,
    LimiterUnavailable: 503,
    DatabaseUnavailable: 503,
    UnknownModel: 404,
    NoDeployment: 503,
    NoEligibleProvider: 400,
    WrongModelMode: 400,
}


def refusal_error(refusal: Refusal) -> RouterError:
    """The error a client gets for a domain refusal: its status, code, words and headers."""
    status = _REFUSAL_STATUS.get(type(refusal), 400 if isinstance(refusal, RoutingRefusal) else 403)
    headers: dict[str, str] = {}
    if isinstance(refusal, RateLimited):
        headers.update(refusal.headers)
        if refusal.retry_after is not None:
            headers["Retry-After"] = str(refusal.retry_after)
    elif isinstance(refusal, LimiterUnavailable):
        headers["Retry-After"] = "1"
    elif isinstance(refusal, DatabaseUnavailable):
        headers["Retry-After"] = str(refusal.retry_after)
    param = refusal.param if isinstance(refusal, RoutingRefusal) else None
    return RouterError(status, refusal.message, code=refusal.code, param=param, headers=headers)


def client_error(error: RouterError | Refusal) -> RouterError:
    """``error`` as its client sees it (a refusal mapped by ``refusal_error``)."""
    return error if isinstance(error, RouterError) else refusal_error(error)

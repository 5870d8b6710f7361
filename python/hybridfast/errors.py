"""The gateway's errors: a stable code, an HTTP status, a one-line hint.

Every error a user can see is a `GatewayError` (or a core exception mapped to one). The
server renders it in the client protocol's own error shape; the CLI prints
`error ERR_CODE: message (hint: ...)` and exits non-zero. Messages never carry keys.
"""

from __future__ import annotations

from hybridfast._core import HybridfastError


class GatewayError(HybridfastError):
    """An error with a stable `code`, the HTTP `status` to answer with and a `hint`."""

    code = "ERR_INTERNAL"
    status = 500
    hint = ""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if hint is not None:
            self.hint = hint
        self.headers = headers or {}

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"error {self.code}: {self.message}{hint}"


class InvalidRequest(GatewayError):
    code, status = "ERR_INVALID_REQUEST", 400
    hint = "check the request body against the API reference"


class RequestTooLarge(GatewayError):
    code, status = "ERR_REQUEST_TOO_LARGE", 413
    hint = "raise server.max_body_bytes or send a smaller body"


class Unauthorized(GatewayError):
    code, status = "ERR_UNAUTHORIZED", 401
    hint = "send `Authorization: Bearer <key>` (or `x-api-key`) with a key the gateway knows"


class ModelNotFound(GatewayError):
    code, status = "ERR_MODEL_NOT_FOUND", 404
    hint = "GET /v1/models lists the names this gateway serves"


class BudgetExceeded(GatewayError):
    code, status = "ERR_BUDGET_EXCEEDED", 429
    hint = "the budget resets with its window; raise it in config or through PUT /admin/budgets"


class RateLimited(GatewayError):
    code, status = "ERR_RATE_LIMITED", 429
    hint = "retry after the time given in Retry-After"


class QueueFull(RateLimited):
    """Every deployment that could serve is at its concurrency limit with a full queue (or
    the wait for a slot outlasted `queue.timeout_s`)."""

    code = "ERR_QUEUE_FULL"
    hint = "the deployments are busy and their queues full; retry after Retry-After"


class Unsupported(GatewayError):
    """The request needs something its deployments are declared not to do (a capability
    missing from their `capabilities:` list, a hosted tool...): no upstream is called."""

    code, status = "ERR_UNSUPPORTED", 400
    hint = "send it to a model that supports it, or leave that part out"


class ProviderUnavailable(GatewayError):
    code, status = "ERR_PROVIDER_UNAVAILABLE", 502
    hint = "every deployment for this model failed; see /readyz and the gateway log"


class NoChatModels(GatewayError):
    """No chat deployment exists (no config, no key, no local server found): a state to fix,
    not a typo's 404."""

    code, status = "ERR_NO_CHAT_MODELS", 503
    hint = (
        "add a chat model: start Ollama (or set OLLAMA_HOST), set OPENAI_API_KEY or "
        "ANTHROPIC_API_KEY, start an OpenAI-compatible server, or serve with --config"
    )

    def __init__(self, message: str = "this gateway has no chat model yet") -> None:
        # The OpenAI and Anthropic SDKs retry a 503 unless told that retrying will not help.
        super().__init__(message, headers={"x-should-retry": "false"})


class ConfigError(GatewayError):
    code, status = "ERR_CONFIG", 500
    hint = "run `python -m hybridfast config check` for the full list"


# The one place core errors become gateway errors: the binding sets `code` (and `details`);
# nothing here re-derives what the core decided.
_CORE_CODES: dict[str, type[GatewayError]] = {
    "ERR_BUDGET_EXCEEDED": BudgetExceeded,
    "ERR_NOT_FOUND": ModelNotFound,
    "ERR_MODEL_NOT_FOUND": ModelNotFound,
    "ERR_INVALID_REQUEST": InvalidRequest,
    "ERR_DIMENSION": InvalidRequest,
    "ERR_OVERFLOW": InvalidRequest,
}


def to_gateway_error(exc: BaseException) -> GatewayError:
    """Any error the pipeline can meet, as the `GatewayError` a user sees: gateway errors as
    they are, core errors by their code, anything else as a 500 that says nothing inside."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, HybridfastError):
        code = exc.code
        if code == "ERR_NO_CANDIDATES":
            return ProviderUnavailable(str(exc), status=503)
        cls = _CORE_CODES.get(code)
        if cls is not None:
            return cls(str(exc), code=code if cls is InvalidRequest else None)
        if code == "ERR_STORAGE":
            return GatewayError(
                "the gateway's storage failed", code=code, status=503, hint="retry shortly"
            )
        return GatewayError(str(exc), code=code)
    return GatewayError("internal error", hint="the gateway log has the details")

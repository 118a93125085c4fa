"""The one exception tree.

    ProxyError
    ├── Refusal                  answered to the bot with the contract's status and code
    │   ├── BadRequest           400 bad_request
    │   ├── Unauthenticated      401 unauthenticated
    │   ├── Forbidden            403 forbidden
    │   ├── EndpointForbidden    403 endpoint_forbidden
    │   ├── PolicyDenied         403 policy_denied (names the rule)
    │   ├── IdempotencyConflict  409 idempotency_conflict
    │   ├── TooLarge             413 too_large
    │   ├── RateLimited          429 rate_limited (Retry-After)
    │   ├── UpstreamError        502 upstream_error
    │   ├── NotReady             503 not_ready
    │   │   └── AuditReserveReached  the audit disk is below its reserve: reads refused
    │   ├── AccountPaused        503 account_paused
    │   └── UpstreamTimeout      504 upstream_timeout
    ├── ConfigError              invalid configuration or policy at start-up (exit 3)
    └── SecretSourceError        Vault unreachable, denied, or a secret malformed
        ├── SecretMissing        the secret (or its current version) is gone: the account stops
        └── VaultUnreachable     connection refused, timeout, sealed: serve from memory (grace)

Third-party exceptions are translated into these at the edge that meets them. Messages never
carry secret material: they name fields and say what to do.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Root of every error the proxy raises on purpose."""


class Refusal(ProxyError):
    """A request the proxy will not serve; becomes the contract's JSON error body."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class BadRequest(Refusal):
    status, code = 400, "bad_request"


class Unauthenticated(Refusal):
    status, code = 401, "unauthenticated"


class Forbidden(Refusal):
    status, code = 403, "forbidden"


class EndpointForbidden(Refusal):
    status, code = 403, "endpoint_forbidden"


class PolicyDenied(Refusal):
    status, code = 403, "policy_denied"


class IdempotencyConflict(Refusal):
    status, code = 409, "idempotency_conflict"


class TooLarge(Refusal):
    status, code = 413, "too_large"


class RateLimited(Refusal):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, rule: str | None = None) -> None:
        super().__init__(message, rule=rule)
        self.retry_after = retry_after


class UpstreamError(Refusal):
    status, code = 502, "upstream_error"


class NotReady(Refusal):
    status, code = 503, "not_ready"


class AuditReserveReached(NotReady):
    """The audit disk is below its reserve: this record (a read, an aggregate) is not written,
    so that the space left goes to order decisions."""


class AccountPaused(Refusal):
    status, code = 503, "account_paused"

    def __init__(self, message: str, *, rule: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, rule=rule)
        self.retry_after = retry_after


class UpstreamTimeout(Refusal):
    status, code = 504, "upstream_timeout"


class ConfigError(ProxyError):
    """Configuration or policy is invalid. ``str()`` is ``file: problem``."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


class SecretSourceError(ProxyError):
    """The secret source (Vault) could not give what was asked; says which path, never values."""


class SecretMissing(SecretSourceError):
    """No secret at the path: deleted, never written, or its current version deleted."""


class VaultUnreachable(SecretSourceError):
    """Vault could not be reached or is sealed; nothing says the secrets changed."""

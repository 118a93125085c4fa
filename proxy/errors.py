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
    │   │   ├── LockTimeout      a key's nonce lock stayed held by another request
    │   │   ├── NonceUnitChanged a key asked for nonces in another unit (could go backwards)
    │   │   └── AuditReserveReached  the audit disk is below its reserve: reads refused
    │   ├── AccountPaused        503 account_paused
    │   └── UpstreamTimeout      504 upstream_timeout
    ├── ConfigError              invalid configuration or policy at start-up (exit 3)
    ├── PolicyError              policy files with problems, each ``file: where: problem``
    ├── SecretSourceError        Vault unreachable, denied, or a secret malformed
    │   ├── SecretMissing        the secret (or its current version) is gone: the account stops
    │   ├── VaultUnreachable     connection refused, timeout, sealed: serve from memory (grace)
    │   └── TransitError         Vault Transit unreachable, denied, or not a signature
    │       └── TransitKeyMissing    the Transit key (or version) is gone
    ├── KeyFormatError           secret text that is not a key of the expected kind
    ├── KeyInputError            `keys import-transit` input that is not usable
    ├── TickerError              an exchange ticker answer that is not a usable price
    ├── InstrumentError          an instruments answer that does not describe the instrument exactly
    ├── KeyCheckFailed           `keys rotate`: the exchange refused the new key, or was unreachable
    ├── ClientLimitExceeded      a request head over a pre-authentication limit (431, 414)
    └── AuditError               the audit trail cannot be written or read as evidence
        ├── AuditIntegrityError  reading with the key found tampering (names the first record)
        ├── ChainKeyError        the chain key is malformed
        ├── CheckpointError      a checkpoint or proof malformed, or not signed by a trusted key
        │   └── ProofError       an inclusion proof that cannot fit its index and tree size
        ├── UnsafeAuditRecord    a record would carry secret-looking material or a reserved key
        └── TrailFileError       TRAIL.json missing, malformed, or written with another key

Errors that callers historically caught as ``ValueError`` (bad input) still are: those classes
derive from both ``ProxyError`` and ``ValueError``.

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


class LockTimeout(NotReady):
    """The per-key lock stayed held by another request for the whole wait."""


class NonceUnitChanged(NotReady):
    """A key that has signed in one unit was asked for a nonce in another (e.g. ms
    vs us): switching could go backwards in the exchange's eyes, so it is refused."""


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


class TransitError(SecretSourceError):
    """Transit unreachable, denied, or an answer that is not a signature; never holds input."""


class TransitKeyMissing(TransitError):
    """The Transit key, or the version the account pins, does not exist."""


class PolicyError(ProxyError, ValueError):
    """One or more policy problems, each ``file: where: problem``; ``client`` is the client the
    file names, when that can be read (a serving worker refuses that client until it loads)."""

    def __init__(self, problems: list[str], client: str | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.client = client


class KeyFormatError(ProxyError, ValueError):
    """The secret text is not a key of the kind expected; the message never holds it."""


class KeyInputError(ProxyError, ValueError):
    """The key on stdin is not usable; the message names fields, never values."""


class TickerError(ProxyError, ValueError):
    """The answer is not a usable price for the asked symbol (the caller refuses)."""


class InstrumentError(ProxyError, ValueError):
    """An instruments answer that does not describe the asked instrument exactly (every
    notional rule on it then refuses: a contract size is never guessed)."""
class KeyCheckFailed(ProxyError):
    """``keys rotate``'s signed read with the new key: the exchange refused it (the message is
    its own reason), or could not be reached (``unreachable``)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class ClientLimitExceeded(ProxyError):
    """Raised inside the HTTP parser's callbacks (proxy/server/listeners.py) when a request
    head goes over a limit; the parser turns it into its own error, answered 431 or 414."""


class AuditError(ProxyError):
    """The audit trail cannot be written, or read as evidence."""


class AuditIntegrityError(AuditError):
    """Reading with a key found the trail tampered with; names the first bad record."""


class ChainKeyError(AuditError, ValueError):
    """The chain key is malformed. The message never contains the key."""


class CheckpointError(AuditError, ValueError):
    """A signed checkpoint or inclusion proof that is malformed, or not signed by a trusted key."""


class ProofError(CheckpointError):
    """An inclusion proof that cannot be right for its index and tree size."""


class UnsafeAuditRecord(AuditError, ValueError):
    """A record would put secret-looking material, or a reserved key, into the trail."""


class TrailFileError(AuditError):
    """TRAIL.json is missing, malformed, or was not written with this key."""

"""What a request costs against an account's outbound budget, asked of its exchange (pure).

An account's outbound budget (``[[accounts]] weight_per_minute``) spends these per request so
one greedy bot cannot get a shared key rate-limited or banned. Each exchange declares its
published weights (``capabilities.weights``: a cost per request and the default budget);
where it declares none, every request costs 1 and no budget applies unless the account sets one.
"""

from __future__ import annotations

from proxy import exchanges


def request_weight(exchange: str, method: str, path: str, query: str = "", body: bytes = b"") -> int:
    """What one request costs against the account's budget (0: the exchange counts it in
    another of its limits)."""
    known = exchanges.find(exchange)
    weights = known.capabilities.weights if known is not None else None
    return 1 if weights is None else weights.cost(method, path, query, body)


def default_weight_per_minute(exchange: str) -> int | None:
    """The budget an account gets unless it sets ``weight_per_minute`` (None: no default)."""
    known = exchanges.find(exchange)
    weights = known.capabilities.weights if known is not None else None
    return None if weights is None else weights.per_minute

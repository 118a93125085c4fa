"""What a caller's audit record looks like, and the last-line check that keeps secrets out.

The caller (the app) builds plain dicts. A request is written as a ``phase="decision"`` record
before anything is forwarded and, when allowed, a ``phase="outcome"`` record afterwards with the
same ``request_id``. An allowed decision with no outcome is a crash (or a lost response) between
the two; verify and query list it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.errors import UnsafeAuditRecord
from proxy.model.sensitive import Secret

PHASE = "phase"
PHASE_DECISION = "decision"
PHASE_OUTCOME = "outcome"
#: outcome errors meaning "sent, but no usable answer came back": the order may exist
LOST_ANSWER_ERRORS = frozenset({"upstream_timeout", "upstream_error"})


def is_lost_answer(record: Mapping[str, Any]) -> bool:
    """An outcome record of a request that was sent and got no answer the proxy could read."""
    return (record.get(PHASE) == PHASE_OUTCOME and record.get("upstream_status") is None
            and record.get("error") in LOST_ANSWER_ERRORS)

CONTRACT_FIELDS = (
    "ts", "request_id", "client", "account", "exchange", "method", "path", "category",
    "decision", "rule", "client_order_id", "upstream_status", "key_version",
)
"""CONTRACT §6 fields."""

EXTRA_FIELDS = (
    "phase", "intent", "nonce", "exchange_order_id", "upstream_latency_ms", "policy_version",
)
"""Issue 6 additions; ``intent`` is a dict of symbol, side, type, quantity, price, notional."""

INTENT_FIELDS = ("symbol", "side", "type", "quantity", "price", "notional")

_FORBIDDEN = re.compile(
    r"signature|token|secret|passphrase|password|authorization|private_?key|api_?key|cookie",
    re.IGNORECASE,
)



def check_record(record: Mapping[str, Any]) -> None:
    """Refuse keys that name secrets, ``_`` keys (the chain's) and Secret values, at any depth.

    This is a defence in depth: the caller must never put a secret in a record, but if it
    ever tries, the write fails loudly instead of persisting the secret forever. Keys already
    seen to be fine are cached, so the check costs about a microsecond per record.
    """
    _check(record)


_SCALARS = frozenset({str, int, float, bool, type(None)})
_KEYS_OK: set[str] = set()
_KEYS_OK_MAX = 4096


def _check(value: object) -> None:
    if type(value) in _SCALARS:
        return
    if isinstance(value, Secret):
        raise UnsafeAuditRecord("refusing to audit a Secret value")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key not in _KEYS_OK:
                _check_key(key)
            _check(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check(item)


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise UnsafeAuditRecord("audit record keys must be strings")
    if key.startswith("_"):
        raise UnsafeAuditRecord(f"audit key {key!r} is reserved for the chain")
    if _FORBIDDEN.search(key):
        raise UnsafeAuditRecord(
            f"audit key {key!r} looks like a secret, signature or token; leave it out"
        )
    if len(_KEYS_OK) < _KEYS_OK_MAX:
        _KEYS_OK.add(key)

"""The proxy's own refusals in an exchange's error format, and the exchange's own reasons.

A refusal the proxy makes (policy_denied, rate_limited, ...) is answered in the error format of
the account's exchange, with one of the exchange's own codes that ccxt maps to the class a bot's
retry logic treats right (docs/interface.md "Refusals"). Each exchange declares how, as its
``errors`` capability; this module holds the shared shapes. It also reads an exchange's own
error code and message from an answer (``error_reason``), for logs, /readyz and ``keys status``.

Pure: values and parsers only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class RefusalView:
    """A refusal the proxy makes itself, before an exchange module dresses it in the exchange's
    error format (docs/interface.md "Refusals in the exchange's own format")."""

    status: int
    code: str          # the contract's code, e.g. "policy_denied"
    message: str       # what happened and what to do; never a secret
    rule: str          # the rule that decided; the code itself when no rule did
    request_id: str

    @property
    def text(self) -> str:
        """One line naming the code, the rule and the request id: ccxt quotes the body in its
        exception, so a bot's log says which rule refused and which audit record to look up."""
        return f"{self.code}: {self.message} (rule {self.rule}; request {self.request_id})"

    def fields(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "rule": self.rule,
                "request_id": self.request_id}


@dataclass(frozen=True)
class RefusalBody:
    content_type: str
    body: bytes


def refusal_json(value: Any) -> RefusalBody:
    return RefusalBody("application/json", json.dumps(value).encode())


def refusal_text(refusal: RefusalView) -> RefusalBody:
    """For classes the exchange's ccxt maps from the HTTP status only (no body code does): a
    body that is not JSON makes ccxt fall back to the status (429, 502/503, 504)."""
    return RefusalBody("text/plain; charset=utf-8", refusal.text.encode())


def contract_refusal(refusal: RefusalView) -> RefusalBody:
    """The proxy's own JSON, for a path that belongs to no exchange."""
    return refusal_json({"error": refusal.fields()})


def render_native(refusal: RefusalView, table: Mapping[str, Any], shape: Callable[[Any], Any]) -> RefusalBody:
    """``shape(native)`` as JSON, where ``native`` is the exchange's own error for the refusal's
    code in ``table``; plain text where the table has none (ccxt then maps the HTTP status)."""
    native = table.get(refusal.code)
    return refusal_text(refusal) if native is None else refusal_json(shape(native))


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def exchange_reason(body: bytes, code_key: str, message_key: str) -> str | None:
    """``"<code> <message>"`` from a JSON object answer such as ``{"code": -1, "msg": "..."}``:
    the exchange's own words for why it refused, cut short and stripped of control characters."""
    data = json_or_none(body)
    return reason_text(data.get(code_key), data.get(message_key)) if isinstance(data, dict) else None


def reason_text(*parts: Any) -> str | None:
    words = " ".join(str(p) for p in parts if p not in (None, "", [], {}))
    words = _CONTROL.sub(" ", words).strip()
    return words[:200] or None


@dataclass(frozen=True)
class ErrorFormat:
    """An exchange's error format (its ``errors`` capability): how the proxy answers its own
    refusals in it, and how to read the exchange's own code and message from an answer."""

    #: path prefixes of its API: a refusal made before the account is known (a bad token, an
    #: unknown account) answers in the format of the exchange whose path it is
    paths: tuple[str, ...]
    #: proxy code -> the exchange's own error (None: plain text, ccxt maps the HTTP status)
    table: Mapping[str, object]
    render: Callable[[RefusalView], RefusalBody]
    #: the exchange's own code and message from an error answer (None: none found)
    reason: Callable[[bytes], str | None]

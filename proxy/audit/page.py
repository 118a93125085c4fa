"""The audit review page, pure: records and a verify verdict in, one HTML document out.

Every field of a record can come from a bot (symbols, client order ids, paths), so every value
goes through ``html.escape`` on its way into the page, and the page is served with a CSP that
allows no script at all and only the one stylesheet below (by hash): a value that somehow
escaped escaping still could not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from proxy.audit.record import PHASE, PHASE_DECISION, PHASE_OUTCOME, is_lost_answer

RECENT_ROWS = 50
"""Decisions listed in "Recent decisions", newest first."""
PENDING_ROWS = 100
"""Intents without outcome listed (oldest first: the newest may still be in flight)."""


@dataclass(frozen=True)
class TrailStatus:
    """The verify verdict the page shows; ``state`` is ``ok``, ``failed`` or ``unknown``."""

    state: str
    headline: str
    details: tuple[str, ...] = ()
    checked: str = ""


@dataclass(frozen=True)
class ClientAccount:
    client: str
    account: str
    orders_allowed: int
    orders_denied: int
    notional_allowed: Decimal
    unpriced: int
    #: orders answered again from the idempotency record: never sent twice, so not counted
    #: as orders or notional
    replays: int = 0


@dataclass(frozen=True)
class RuleCount:
    rule: str
    denials: int
    clients: tuple[str, ...]


@dataclass(frozen=True)
class Overview:
    """What the page says about a window of records (the newest ``limit`` of the trail)."""

    limit: int
    records: int
    first_ts: str
    last_ts: str
    allowed: int
    denied: int
    outcomes: int
    denials_by_rule: tuple[RuleCount, ...]
    per_client_account: tuple[ClientAccount, ...]
    pending: tuple[Mapping[str, Any], ...]
    recent: tuple[tuple[Mapping[str, Any], Mapping[str, Any] | None], ...]
    #: allowed decisions that replayed an earlier answer (same client order id and order)
    replays: int = 0


def summarize(records: Sequence[Mapping[str, Any]], limit: int) -> Overview:
    """Figures over ``records`` (oldest first). Orders are ``trade`` decisions, one per intent
    of a batch; notional is summed as Decimal per client and account, in quote units. An
    idempotent replay answered a retry from the first attempt's record: it is counted as a
    replay, never as an allowed decision, an order or notional."""
    decisions = [r for r in records if r.get(PHASE) == PHASE_DECISION]
    outcomes: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if r.get(PHASE) == PHASE_OUTCOME and isinstance(r.get("request_id"), str):
            outcomes[r["request_id"]] = r
    denied = [r for r in decisions if r.get("decision") == "deny"]
    by_rule: Counter[str] = Counter(_text(r.get("rule")) for r in denied)
    rule_clients: dict[str, set[str]] = {}
    for r in denied:
        rule_clients.setdefault(_text(r.get("rule")), set()).add(_text(r.get("client")))
    # Only an outcome with an answer closes an allowed decision: a crash (no outcome) and a
    # lost answer (timeout or unreachable after sending) stay listed, since the order may exist.
    pending = [
        r for r in decisions
        if r.get("decision") == "allow" and r.get("idempotent_replay") is not True
        and (r.get("request_id") not in outcomes or is_lost_answer(outcomes[r["request_id"]]))
    ]
    recent = [(r, outcomes.get(r.get("request_id", ""))) for r in reversed(decisions)]
    replays = sum(1 for r in decisions
                  if r.get("decision") == "allow" and r.get("idempotent_replay") is True)
    return Overview(
        limit=limit,
        records=len(records),
        first_ts=_text(records[0].get("ts")) if records else "",
        last_ts=_text(records[-1].get("ts")) if records else "",
        allowed=len(decisions) - len(denied) - replays,
        denied=len(denied),
        outcomes=len(outcomes),
        denials_by_rule=tuple(
            RuleCount(rule, n, tuple(sorted(rule_clients[rule])))
            for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
        per_client_account=_per_client_account(decisions),
        pending=tuple(pending),
        recent=tuple(recent[:RECENT_ROWS]),
        replays=replays,
    )


def _per_client_account(decisions: Iterable[Mapping[str, Any]]) -> tuple[ClientAccount, ...]:
    rows: dict[tuple[str, str], list[Any]] = {}
    for r in decisions:
        if r.get("category") != "trade":
            continue
        row = rows.setdefault((_text(r.get("client")), _text(r.get("account"))),
                              [0, 0, Decimal(0), 0, 0])
        intents = _intents(r)
        if r.get("decision") != "allow":
            row[1] += len(intents)
            continue
        if r.get("idempotent_replay") is True:
            row[4] += len(intents)
            continue
        row[0] += len(intents)
        for intent in intents:
            notional = _decimal(intent.get("notional"))
            if notional is None:
                row[3] += 1
            else:
                row[2] += notional
    return tuple(
        ClientAccount(client, account, *row) for (client, account), row in sorted(rows.items())
    )


def _intents(rec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    many = rec.get("intents")
    if isinstance(many, list) and many:
        return [i for i in many if isinstance(i, Mapping)] or [{}]
    one = rec.get("intent")
    return [one if isinstance(one, Mapping) else {}]


def _decimal(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------- rendering

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 6px}
.status{padding:10px 14px;border-radius:6px;margin:8px 0 4px;font-weight:600}
.ok{background:#dff3e3;border:1px solid #3c9a50}.failed{background:#fbe0e0;border:1px solid #c43d3d}
.unknown{background:#f2f2f2;border:1px solid #999}
.note{color:#57606a;font-size:12px}.figures span{display:inline-block;margin-right:18px}
table{border-collapse:collapse;margin:4px 0;font-size:13px}td,th{border:1px solid #d0d7de;
padding:3px 8px;text-align:left;vertical-align:top}td{max-width:24em;overflow-wrap:anywhere}
td.t{white-space:nowrap}th{background:#f6f8fa}td.n{text-align:right;
font-variant-numeric:tabular-nums}tr.deny td{background:#fff4f4}code{font-size:12px}
""".strip()
CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{CSS_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""Serve the page with this header: no script, no other resource, only the style above."""


def e(value: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(_text(value), quote=True)


def render(overview: Overview, status: TrailStatus, *, generated: str) -> str:
    o = overview
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Audit trail review</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Audit trail review</h1>",
        f'<p class="note">Read-only. Generated {e(generated)}. Reload for fresh figures.</p>',
        _status(status),
        f'<p class="note">The figures below cover the newest {o.records} records '
        f"(at most {o.limit}) from {e(o.first_ts) or '-'} to {e(o.last_ts) or '-'}. "
        "For anything older use <code>audit query</code> or <code>audit export --csv</code>.</p>",
        '<p class="figures">'
        f'<span>decisions allowed: <b id="allowed">{o.allowed}</b></span>'
        f'<span>decisions denied: <b id="denied">{o.denied}</b></span>'
        f'<span>idempotent replays: <b id="replays">{o.replays}</b></span>'
        f'<span>outcomes: <b id="outcomes">{o.outcomes}</b></span>'
        f'<span>intents without outcome: <b id="pending-count">{len(o.pending)}</b></span></p>',
        _rules(o.denials_by_rule),
        _orders(o.per_client_account),
        _pending(o.pending),
        _recent(o.recent),
        "</body></html>",
    ]
    return "\n".join(parts)


def _status(status: TrailStatus) -> str:
    state = status.state if status.state in ("ok", "failed") else "unknown"
    details = "".join(f"<li>{e(d)}</li>" for d in status.details)
    checked = f" (checked {e(status.checked)})" if status.checked else ""
    return (
        f'<div id="trail-status" class="status {state}">{e(status.headline)}{checked}</div>'
        + (f'<ul class="note">{details}</ul>' if details else "")
    )


def _table(table_id: str, headers: Sequence[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p id="{table_id}" class="note">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _rules(rules: tuple[RuleCount, ...]) -> str:
    rows = [
        f'<tr><td>{e(r.rule)}</td><td class="n">{r.denials}</td><td>{e(", ".join(r.clients))}</td></tr>'
        for r in rules
    ]
    return "<h2>Denials by rule</h2>" + _table(
        "denials", ("rule", "denials", "clients"), rows, "No denials in this window.")


def _orders(rows_in: tuple[ClientAccount, ...]) -> str:
    rows = [
        f"<tr><td>{e(r.client)}</td><td>{e(r.account)}</td><td class=\"n\">{r.orders_allowed}</td>"
        f'<td class="n">{r.orders_denied}</td><td class="n">{e(_money(r.notional_allowed))}</td>'
        f'<td class="n">{r.unpriced}</td><td class="n">{r.replays}</td></tr>'
        for r in rows_in
    ]
    return (
        "<h2>Orders and notional per client and account</h2>"
        + _table("orders", ("client", "account", "orders allowed", "orders denied",
                            "notional allowed (quote units)", "allowed without notional",
                            "replays (not sent again)"),
                 rows, "No orders in this window.")
    )


def _money(d: Decimal) -> str:
    text = format(d.normalize(), "f") if d else "0"
    whole, _, frac = text.partition(".")
    grouped = f"{int(whole):,}" if whole.lstrip("-").isdigit() else whole
    return f"{grouped}.{frac}" if frac else grouped


def _pending(pending: tuple[Mapping[str, Any], ...]) -> str:
    rows = [
        f"<tr><td class=\"t\">{e(r.get('ts'))}</td><td><code>{e(r.get('request_id'))}</code></td>"
        f"<td>{e(r.get('client'))}</td><td>{e(r.get('account'))}</td>"
        f"<td>{e(r.get('method'))} {e(r.get('path'))}</td><td>{e(_symbol(r))}</td></tr>"
        for r in pending[:PENDING_ROWS]
    ]
    more = len(pending) - PENDING_ROWS
    if more > 0:
        rows.append(f'<tr><td colspan="6">... and {more} more: run <code>audit verify</code> '
                    "for the full list</td></tr>")
    return (
        "<h2>Intents without outcomes</h2>"
        '<p class="note">Allowed decisions with no outcome record: a request still in flight, '
        "or a crash or lost answer after the decision. The order may or may not have reached "
        "the exchange: look it up there.</p>"
        + _table("pending", ("ts", "request_id", "client", "account", "request", "symbol"),
                 rows, "None in this window.")
    )


def _recent(recent: tuple[tuple[Mapping[str, Any], Mapping[str, Any] | None], ...]) -> str:
    rows = []
    for r, out in recent:
        intent = _intents(r)[0]
        order = " ".join(_text(intent.get(k)) for k in ("side", "quantity") if intent.get(k))
        if intent.get("price"):
            order += f" @ {_text(intent.get('price'))}"
        status = out.get("upstream_status") if out is not None else None
        css = ' class="deny"' if r.get("decision") == "deny" else ""
        rows.append(
            f"<tr{css}><td class=\"t\">{e(r.get('ts'))}</td>"
            f"<td><code>{e(r.get('request_id'))}</code></td>"
            f"<td>{e(r.get('client'))}</td><td>{e(r.get('account'))}</td>"
            f"<td>{e(r.get('method'))} {e(r.get('path'))}</td><td>{e(_symbol(r))}</td>"
            f"<td class=\"t\">{e(order)}</td><td>{e(r.get('client_order_id'))}</td>"
            f"<td>{e(_decision(r))}</td><td>{e(r.get('rule'))}</td>"
            f'<td class="n">{e(status)}</td></tr>'
        )
    return (
        f"<h2>Recent decisions (newest {RECENT_ROWS})</h2>"
        + _table("recent", ("ts", "request_id", "client", "account", "request", "symbol",
                            "order", "client order id", "decision", "rule", "upstream"),
                 rows, "No decisions yet.")
    )


def _decision(rec: Mapping[str, Any]) -> str:
    """A replay is an answer given again, not a second allowed order: it says so."""
    return "replay" if rec.get("idempotent_replay") is True else _text(rec.get("decision"))


def _symbol(rec: Mapping[str, Any]) -> str:
    intent = _intents(rec)[0]
    return _text(intent.get("symbol") or rec.get("symbol"))

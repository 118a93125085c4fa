"""The review page, pure: figures computed from records, and hostile values escaped."""

from __future__ import annotations

import html
import re
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from proxy.audit.page import CONTENT_SECURITY_POLICY, CSS, TrailStatus, render, summarize
from tests.audit.conftest import decision, outcome

OK = TrailStatus("ok", "The trail verifies: 6 records in 1 chains, 1 segments.", (), "now")


def _trail() -> list[dict[str, Any]]:
    def order(i: int, client: str, qty: str, price: str, **kw: Any) -> dict[str, Any]:
        notional = str(Decimal(qty) * Decimal(price))
        intent = {"symbol": "BTCUSDT", "side": "BUY", "quantity": qty, "price": price,
                  "notional": notional}
        return decision(i, ts=f"2025-01-01T00:00:{i:02d}.000000Z", client=client, intent=intent, **kw)

    return [
        order(1, "alpha", "0.01", "50000"),                          # 500
        outcome(1, ts="2025-01-01T00:00:02.000000Z"),
        order(3, "alpha", "0.2", "60000", decision="deny", rule="max_order_notional"),
        order(4, "beta", "1", "3000.5", account="okx-main"),         # no outcome: pending
        order(5, "alpha", "0.02", "50000"),                          # 1000
        outcome(5, ts="2025-01-01T00:00:06.000000Z", upstream_status=201),
        decision(7, ts="2025-01-01T00:00:07.000000Z", decision="deny", rule="symbols",
                 client="beta", account="okx-main"),
        decision(8, ts="2025-01-01T00:00:08.000000Z", decision="deny", rule="symbols",
                 client="alpha"),
        decision(9, ts="2025-01-01T00:00:09.000000Z", category="read", intent=None,
                 client="alpha", idempotent_replay=True),
        decision(10, ts="2025-01-01T00:00:10.000000Z", decision="deny",
                 rule="unauthenticated", client=None, category=None, intent=None),
    ]


def test_page_summarize_figures() -> None:
    o = summarize(_trail(), 100)
    assert (o.records, o.allowed, o.denied, o.outcomes, o.replays) == (10, 3, 4, 2, 1)
    assert [(r.rule, r.denials, r.clients) for r in o.denials_by_rule] == [
        ("symbols", 2, ("alpha", "beta")), ("max_order_notional", 1, ("alpha",)),
        ("unauthenticated", 1, ("",)),
    ]
    rows = {(r.client, r.account): r for r in o.per_client_account}
    alpha = rows[("alpha", "binance-main")]
    assert (alpha.orders_allowed, alpha.orders_denied, alpha.notional_allowed) == (2, 2, Decimal("1500"))
    beta = rows[("beta", "okx-main")]
    assert (beta.orders_allowed, beta.orders_denied, beta.notional_allowed) == (1, 1, Decimal("3000.5"))
    assert [p["request_id"] for p in o.pending] == ["req-4"]  # the replay has no outcome by design
    assert [r["request_id"] for r, _ in o.recent][:2] == ["req-10", "req-9"]
    assert dict((r["request_id"], out and out["upstream_status"]) for r, out in o.recent)["req-5"] == 201
    assert (o.first_ts, o.last_ts) == ("2025-01-01T00:00:01.000000Z", "2025-01-01T00:00:10.000000Z")


def test_page_replays_are_replays_not_orders_or_notional() -> None:
    intent = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01", "price": "50000", "notional": "500"}
    first = decision(1, client="alpha", intent=intent, client_order_id="bot-1")
    retries = [decision(i, client="alpha", intent=intent, client_order_id="bot-1", idempotent_replay=True)
               for i in (2, 3)]
    o = summarize([first, outcome(1), *retries], 10)
    (row,) = o.per_client_account
    assert (row.orders_allowed, row.notional_allowed, row.replays) == (1, Decimal("500"), 2)
    assert (o.allowed, o.replays) == (1, 2)
    page = render(o, OK, generated="now")
    assert 'id="replays">2<' in page and 'id="allowed">1<' in page
    assert page.count("<td>replay</td>") == 2


def test_page_batch_counts_every_order_and_bad_notional_is_unpriced() -> None:
    rec = decision(1, intents=[{"symbol": "A", "notional": "10"}, {"symbol": "B", "notional": "NaN"},
                               {"symbol": "C", "notional": "x"}, {"symbol": "D", "notional": "2.5"}])
    (row,) = summarize([rec], 10).per_client_account
    assert (row.orders_allowed, row.notional_allowed, row.unpriced) == (4, Decimal("12.5"), 2)


class _Text(HTMLParser):
    """Text of the document, and the text inside each element that has an id."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.cells: dict[str, list[str]] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self._open.append(dict(attrs).get("id"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for ident in self._open:
            if ident:
                self.cells.setdefault(ident, []).append(data)


def test_page_render_shows_the_figures() -> None:
    doc = render(summarize(_trail(), 100), OK, generated="2025-01-01T00:01:00Z")
    parser = _Text()
    parser.feed(doc)
    text = " ".join(parser.text)
    assert parser.cells["allowed"] == ["3"] and parser.cells["denied"] == ["4"]
    assert parser.cells["replays"] == ["1"]
    assert parser.cells["pending-count"] == ["1"]
    assert "The trail verifies" in "".join(parser.cells["trail-status"])
    assert "1,500" in text and "3,000.5" in text and "max_order_notional" in text
    assert "req-4" in "".join(parser.cells["pending"])
    assert "script" not in parser.tags


def test_page_render_escapes_hostile_values() -> None:
    evil = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'
    recs = [decision(1, intent={"symbol": evil, "side": evil, "quantity": "1", "price": "1",
                                "notional": "1"},
                     client_order_id=evil, client=evil, account=evil, path="/" + evil,
                     rule=evil, decision="deny"),
            decision(2, client_order_id=evil, intent={"symbol": evil})]
    status = TrailStatus("failed", f"first bad record {evil}", (evil,), evil)
    doc = render(summarize(recs, 10), status, generated=evil)
    parser = _Text()
    parser.feed(doc)
    assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p",
                                "div", "ul", "li", "span", "b", "table", "thead", "tbody", "tr",
                                "th", "td", "code"}
    assert "<script>" not in doc and "<img" not in doc and "onerror=alert" not in doc.replace(
        html.escape("onerror=alert"), "")
    assert " ".join(parser.text).count(evil) >= 8  # shown, as text


def test_page_csp_allows_only_its_own_style() -> None:
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "script-src" not in CONTENT_SECURITY_POLICY
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    doc = render(summarize([], 10), OK, generated="t")
    assert re.findall(r"<style>(.*?)</style>", doc, re.S) == [CSS]


def test_page_lists_a_bounded_number_of_pending_intents() -> None:
    recs = [decision(i, ts=f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}.000000Z") for i in range(250)]
    doc = render(summarize(recs, 1000), OK, generated="t")
    parser = _Text()
    parser.feed(doc)
    assert parser.cells["pending-count"] == ["250"]
    assert "req-99<" in doc and "req-100<" not in doc.split('id="recent"')[0]
    assert "and 150 more" in doc


def test_a_lost_answer_keeps_its_intent_listed_but_an_answered_failure_closes_it() -> None:
    """A timeout after sending is written as an outcome naming the error; the order may exist,
    so the page keeps listing it. An exchange answer (even a 4xx) closes the intent."""
    records = [
        decision(1, ts="2025-01-01T00:00:01.000000Z"),
        outcome(1, ts="2025-01-01T00:00:02.000000Z", upstream_status=None, error="upstream_timeout"),
        decision(3, ts="2025-01-01T00:00:03.000000Z"),
        outcome(3, ts="2025-01-01T00:00:04.000000Z", upstream_status=400),
    ]
    assert [p["request_id"] for p in summarize(records, 100).pending] == ["req-1"]

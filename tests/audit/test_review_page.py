"""The review page as served by the admin app, over a trail written by the real writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx

from proxy.model.sensitive import Secret
from proxy.ops.admin import create_admin_app
from proxy.ops.metrics import Metrics
from proxy.ops.review_page import AuditReview
from tests.audit.conftest import decision, lines, outcome, put_lines, write_trail

T = TypeVar("T")


def _client(review: AuditReview | None) -> httpx.AsyncClient:
    app = create_admin_app(lambda: [], Metrics(), audit_review=lambda: review)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


def _run(review: AuditReview | None, body: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _client(review) as client:
            return await body(client)

    return asyncio.run(go())


def _get(review: AuditReview | None, **params: str) -> httpx.Response:
    return _run(review, lambda c: c.get("/audit", params=params))


def _trail(d: Path, key: Secret) -> None:
    recs = [decision(1), outcome(1), decision(2, decision="deny", rule="symbols"), decision(3)]
    write_trail(d, key, "w1", records=4, make=lambda i: recs[i])
    write_trail(d, key, "w2", records=40, max_segment_bytes=3000,
                make=lambda i: decision(100 + i, client="bulk", decision="deny", rule="max_order_qty"))


def test_review_page_served_with_figures_and_strict_headers(tmp_path: Path, key: Secret) -> None:
    _trail(tmp_path, key)
    r = _get(AuditReview(tmp_path, key))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    assert 'id="allowed">2<' in r.text and 'id="denied">41<' in r.text
    assert 'class="status ok"' in r.text and "44 records in 2 chains" in r.text
    assert "req-3" in r.text and "max_order_qty" in r.text


def test_review_page_reads_only_the_newest_n(tmp_path: Path, key: Secret) -> None:
    _trail(tmp_path, key)
    r = _get(AuditReview(tmp_path, key), n="5")
    assert r.status_code == 200
    assert "newest 5 records" in r.text and "req-139" in r.text and "req-100<" not in r.text
    for bad in ("0", "-1", "abc", "²", "1000000"):
        assert _get(AuditReview(tmp_path, key), n=bad).status_code == 400


def test_review_page_not_ready_before_the_key(tmp_path: Path) -> None:
    assert _get(None).status_code == 503


def test_review_page_shows_a_failing_trail(tmp_path: Path, key: Secret) -> None:
    _trail(tmp_path, key)
    review = AuditReview(tmp_path, key, verify_every_s=0)

    async def views(client: httpx.AsyncClient) -> tuple[str, str]:
        first = (await client.get("/audit")).text
        seg = tmp_path / "w1.000000.jsonl"
        content = lines(seg)
        content[1] = content[1].replace(b"bot-", b"bot_")
        put_lines(seg, content)
        deadline = time.monotonic() + 30
        while True:  # a stale verdict is refreshed alongside the view; a later view shows it
            text = (await client.get("/audit")).text
            if 'class="status failed"' in text or time.monotonic() > deadline:
                return first, text
            await asyncio.sleep(0.05)

    first, text = _run(review, views)
    assert 'class="status ok"' in first
    assert 'class="status failed"' in text and "w1.000000.jsonl:2" in text


def test_review_page_with_the_wrong_key_says_so(tmp_path: Path, key: Secret) -> None:
    _trail(tmp_path, key)
    text = _get(AuditReview(tmp_path, Secret("ab" * 32))).text
    assert 'class="status failed"' in text and "TRAIL.json" in text
    assert ("ab" * 32) not in text and key.reveal() not in text

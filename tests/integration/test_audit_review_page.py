"""The audit review page in a real browser: headless Chromium (Debian's ``chromium``) against
the admin listener of a real proxy that has served allowed and denied orders.

The screenshot is saved under ``tests/artifacts/`` (git-ignored) for a person to look at.
Without a Chromium binary the test skips, saying how to install one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from proxy.audit.review import iter_records
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from tests.support.refusals import proxy_error
from tests.support.stack import REPO, AccountSpec, Stack, start_stack

ARTIFACTS = REPO / "tests" / "artifacts"
EVIL = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
POLICY = """
version = 1
client = "{client}"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if _chromium() is None:
        pytest.skip("no Chromium binary: `apt-get install chromium` (.ci/run does this) to run "
                    "the browser test of the audit review page")
    account = AccountSpec("binance-main", "binance", {"api_key": "k" * 20, "api_secret": "s" * 64})
    policies = {c: POLICY.format(client=c) for c in ("alpha-bot", "beta-bot")}
    with start_stack(tmp_path_factory.mktemp("auditpage"), [account], policies) as s:
        yield s


def _order(stack: Stack, client: str, **over: str) -> httpx.Response:
    body = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": "50000", **over}
    return httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", data=body, timeout=30,
                      headers={"Proxy-Authorization": f"Bearer {stack.token(client)}"})


class _Ids(HTMLParser):
    """Text inside each element with an id, one ``|`` after each text node; the set of tags."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.cells: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self._open.append(dict(attrs).get("id"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.cells[ident] = self.cells.get(ident, "") + data + "|"


def _has(needle: str, text: str) -> bool:
    return needle in "|" + text


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [_chromium() or "chromium", "--headless", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def test_audit_review_page_in_headless_chromium(stack: Stack) -> None:
    for client, count in (("alpha-bot", 3), ("beta-bot", 2)):
        for _ in range(count):
            assert _order(stack, client).status_code == 200  # 500 quote units each
    assert proxy_error(_order(stack, "alpha-bot", quantity="0.5", price="60000"))["rule"] \
        == "max_order_notional"
    for _ in range(2):
        assert proxy_error(_order(stack, "beta-bot", symbol="SOLUSDT", price="150"))["rule"] \
            == "symbols"
    assert _order(stack, "alpha-bot", quantity="0.9").status_code == 403  # max_order_qty
    # A hostile value that reached the trail (as a looser exchange module might let through)
    # from a second writer in the same directory, with the real chain key: still verifies.
    key = stack.vault.client().secrets.kv.v2.read_secret_version(
        path="proxy/audit-chain", mount_point="secret", raise_on_deleted_version=True,
    )["data"]["data"]["key"]
    writer = AuditWriter(stack.dir / "audit", Secret(key), "hostile-test")
    writer.start_sync()
    writer.write_sync({
        "phase": "decision", "request_id": "evil-1", "client": "beta-bot",
        "account": "binance-main", "exchange": "binance", "method": "POST", "path": "/api/v3/order",
        "category": "trade", "decision": "deny", "rule": "symbols", "client_order_id": EVIL,
        "intent": {"symbol": EVIL, "side": "BUY", "quantity": "1", "price": "1", "notional": "1"},
    })
    writer.close_sync()
    decisions = [r for r in iter_records(stack.dir / "audit") if r.get("phase") == "decision"]
    assert len(decisions) == 10

    url = stack.admin_url + "/audit"
    dom = _browser("--dump-dom", "--virtual-time-budget=5000", url)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    page = _Ids()
    page.feed(dom.stdout)
    cells = page.cells
    assert cells["allowed"] == "5|" and cells["denied"] == "5|", cells
    assert cells["pending-count"] == "0|"
    assert "The trail verifies" in cells["trail-status"], cells["trail-status"]
    denials = cells["denials"]
    assert _has("|symbols|3|beta-bot|", denials), denials
    assert _has("|max_order_notional|1|alpha-bot|", denials), denials
    assert _has("|max_order_qty|1|alpha-bot|", denials), denials
    orders = cells["orders"]
    assert _has("|alpha-bot|binance-main|3|2|1,500|0|", orders), orders
    assert _has("|beta-bot|binance-main|2|3|1,000|0|", orders), orders
    assert EVIL in cells["recent"]  # shown as text ...
    assert "script" not in page.tags and "img" not in page.tags  # ... never as markup
    assert "pwned" not in dom.stdout.split("<body")[0]  # the title was not rewritten

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "audit-review-page.png"
    shot.unlink(missing_ok=True)
    result = _browser(f"--screenshot={shot}", "--window-size=1400,1600", "--hide-scrollbars", url)
    assert result.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\naudit review page screenshot: {shot}")

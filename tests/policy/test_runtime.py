"""The policy's edge: budgets spent atomically in a real sqlite store, kill switches through
the store with a short cache, reference prices cached and fail-closed, hot reload."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.exchanges.binance import EXCHANGE as BINANCE
from proxy.guards.prices import ReferencePrices
from proxy.model.request import Inbound, Outbound
from proxy.ops.metrics import Metrics
from proxy.policy.evaluate import EvalContext, evaluate
from proxy.policy.loader import load_dir, parse_file
from proxy.policy.model import PolicySet
from proxy.policy.reload import PolicyReloader
from proxy.policy.runtime import PolicyRuntime, kill_flag, refusal
from proxy.state import open_store
from proxy.upstream import UpstreamResponse

POLICY = """
version = 1
client = "bot"

[[grants]]
account = "main"
allow = ["read", "trade", "cancel"]
mode = "{mode}"

[[grants.budgets]]
per = "client"
window = "1m"
max_orders = 3
"""
ORDER = Inbound("POST", "/api/v3/order", b"", (("content-type", "application/x-www-form-urlencoded"),),
                b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=50000")


def policy_set(mode: str = "enforce") -> PolicySet:
    return PolicySet({"bot": parse_file(Path("p.toml"), POLICY.format(mode=mode).encode())})


def test_runtime_budget_is_spent_atomically_and_refuses_when_over(tmp_path: Path) -> None:
    async def run() -> list[str]:
        store = open_store("sqlite", path=tmp_path / "s.db", url=None)
        runtime = PolicyRuntime(store, None)
        prepared = BINANCE.prepare(ORDER)
        try:
            results = await asyncio.gather(*(
                runtime.charge(evaluate(policy_set(), "bot", "main", prepared)) for _ in range(6)
            ))
        finally:
            await store.close()
        return sorted(d.rule for d in results)

    rules = asyncio.run(run())
    assert rules == ["budget.client.orders.1m"] * 3 + ["grant"] * 3
    denial = refusal(evaluate(policy_set(), "bot", "main", BINANCE.prepare(ORDER),
                              EvalContext(budget_usage={"budget.client.orders.1m": Decimal(3)})))
    assert denial.status == 429 and denial.rule == "budget.client.orders.1m"


def test_runtime_report_mode_budget_is_would_deny(tmp_path: Path) -> None:
    async def run() -> list[tuple[bool, str | None]]:
        store = open_store("sqlite", path=tmp_path / "s.db", url=None)
        runtime = PolicyRuntime(store, None)
        out = []
        for _ in range(4):
            d = await runtime.charge(evaluate(policy_set("report"), "bot", "main", BINANCE.prepare(ORDER)))
            out.append((d.allowed, d.would_deny.rule if d.would_deny else None))
        await store.close()
        return out

    assert asyncio.run(run())[-1] == (True, "budget.client.orders.1m")


def test_runtime_kill_switch_applies_within_a_second(tmp_path: Path) -> None:
    async def run() -> tuple[bool, bool, bool]:
        store = open_store("sqlite", path=tmp_path / "s.db", url=None)
        other = open_store("sqlite", path=tmp_path / "s.db", url=None)  # another worker
        runtime = PolicyRuntime(store, None)
        prepared = BINANCE.prepare(ORDER)
        before = (await runtime.context(policy_set(), "bot", "main", prepared, exchange=BINANCE,
                                        base_url="")).kill_client
        await other.set_flag(kill_flag("client", "bot"), "on")
        await asyncio.sleep(0.5)
        after = (await runtime.context(policy_set(), "bot", "main", prepared, exchange=BINANCE,
                                       base_url="")).kill_client
        await other.clear_flag(kill_flag("client", "bot"))
        await asyncio.sleep(0.5)
        cleared = (await runtime.context(policy_set(), "bot", "main", prepared, exchange=BINANCE,
                                         base_url="")).kill_client
        await store.close()
        await other.close()
        return before, after, cleared

    assert asyncio.run(run()) == (False, True, False)


class FakeSender:
    def __init__(self, status: int = 200, body: bytes = b'{"symbol":"BTCUSDT","price":"50000.10"}') -> None:
        self.calls: list[Outbound] = []
        self.status, self.body = status, body

    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse:
        self.calls.append(out)
        await asyncio.sleep(0.01)
        return UpstreamResponse(self.status, (), self.body, 1.0)


def test_reference_prices_cached_and_shared() -> None:
    sender = FakeSender()
    now = [0.0]
    prices = ReferencePrices(sender, ttl_s=3, clock=lambda: now[0])

    async def run() -> list[Decimal | None]:
        got = await asyncio.gather(*(prices.get(BINANCE, "http://x", "BTCUSDT") for _ in range(5)))
        now[0] = 10.0
        got.append(await prices.get(BINANCE, "http://x", "BTCUSDT"))
        return got

    assert asyncio.run(run()) == [Decimal("50000.10")] * 6
    assert len(sender.calls) == 2
    assert sender.calls[0].path_and_query == "/api/v3/ticker/price?symbol=BTCUSDT"


@pytest.mark.parametrize(("status", "body"), [(500, b"{}"), (200, b'{"price":"1e5"}'), (200, b"[]"),
                                              (200, b'{"price":"0"}')],
                         ids=["ticker_error", "exponent_price", "not_an_object", "zero_price"])
def test_reference_prices_fail_closed(status: int, body: bytes) -> None:
    prices = ReferencePrices(FakeSender(status, body))
    assert asyncio.run(prices.get(BINANCE, "http://x", "BTCUSDT")) is None


def test_reload_swaps_valid_sets_and_holds_the_client_of_an_invalid_file(tmp_path: Path) -> None:
    (tmp_path / "bot.toml").write_text(POLICY.format(mode="enforce"))
    current = load_dir(tmp_path)
    applied: list[PolicySet] = []
    metrics = Metrics()
    reloader = PolicyReloader(tmp_path, {"main"}, current, applied.append, metrics)

    async def run() -> tuple[bool, bool, bool]:
        unchanged = await reloader.check()
        (tmp_path / "bot.toml").write_text(POLICY.format(mode="report"))
        changed = await reloader.check()
        (tmp_path / "bot.toml").write_text(POLICY.format(mode="report") + 'allow = ["withdraw"]\n')
        invalid = await reloader.check()
        return unchanged, changed, invalid

    assert asyncio.run(run()) == (False, True, True)
    assert applied[0].clients["bot"].grants[0].mode == "report"
    assert "bot" not in applied[1].clients and dict(applied[1].held) == {"bot": str(tmp_path / "bot.toml")}
    assert reloader.last_error is not None and "bot.toml" in reloader.last_error
    assert reloader.version == applied[1].version
    assert "proxy_policy_reload_errors_total" in metrics.render()
    assert reloader.detail()["clients_refused"] == ["bot"] and json.dumps(reloader.detail())


def test_reload_never_takes_files_it_has_not_loaded_as_loaded(tmp_path: Path) -> None:
    """A worker handed an older set (as a respawned worker once was) reloads on its first
    check: the reloader compares the files with the bytes it loaded, not with a digest taken
    when it started."""
    (tmp_path / "bot.toml").write_text(POLICY.format(mode="enforce"))
    old = load_dir(tmp_path)
    (tmp_path / "bot.toml").write_text(POLICY.format(mode="report"))
    applied: list[PolicySet] = []
    reloader = PolicyReloader(tmp_path, {"main"}, old, applied.append, Metrics())
    assert asyncio.run(reloader.check()) is True
    assert applied[0].clients["bot"].grants[0].mode == "report"


def test_reload_holds_the_client_of_a_file_that_no_longer_names_it(tmp_path: Path) -> None:
    (tmp_path / "bot.toml").write_text(POLICY.format(mode="enforce"))
    applied: list[PolicySet] = []
    reloader = PolicyReloader(tmp_path, {"main"}, load_dir(tmp_path), applied.append, Metrics())
    (tmp_path / "bot.toml").write_text("[[grants]\n")  # not TOML, no client line
    assert asyncio.run(reloader.check()) is True
    assert "bot" in applied[0].held and "bot" not in applied[0].clients


def test_reference_prices_failures_are_cached_briefly() -> None:
    """30 lookups that fail make one exchange call per failure period, not 30."""
    sender = FakeSender(status=500)
    now = [0.0]
    prices = ReferencePrices(sender, ttl_s=3, failure_ttl_s=1, clock=lambda: now[0])

    async def run() -> list[Decimal | None]:
        got = [await prices.get(BINANCE, "http://x", "BTCUSDT") for _ in range(30)]
        now[0] = 1.5
        got.append(await prices.get(BINANCE, "http://x", "BTCUSDT"))
        return got

    assert set(asyncio.run(run())) == {None}
    assert len(sender.calls) == 2


def test_reference_prices_one_call_for_every_worker_sharing_a_store(tmp_path: Path) -> None:
    """Four workers (four caches) on one state store: one ticker call, one price for all."""
    sender = FakeSender()

    async def run() -> list[Decimal | None]:
        store = open_store("sqlite", path=tmp_path / "s.db", url=None)
        try:
            workers = [ReferencePrices(sender, store=store) for _ in range(4)]
            return list(await asyncio.gather(*(
                w.get(BINANCE, "http://x", "BTCUSDT") for w in workers for _ in range(5))))
        finally:
            await store.close()

    assert set(asyncio.run(run())) == {Decimal("50000.10")}
    assert len(sender.calls) == 1


def test_reference_prices_charge_the_weight_budget_before_calling() -> None:
    from proxy.errors import RateLimited

    sender = FakeSender()
    charged: list[str] = []

    async def over_budget(out: Outbound) -> None:
        charged.append(out.path_and_query)
        raise RateLimited("weight budget reached", retry_after=5, rule="rate_limit.account")

    prices = ReferencePrices(sender)
    with pytest.raises(RateLimited):
        asyncio.run(prices.get(BINANCE, "http://x", "BTCUSDT", spend=over_budget))
    assert charged == ["/api/v3/ticker/price?symbol=BTCUSDT"] and sender.calls == []


def test_runtime_static_rules_refuse_before_any_price_lookup() -> None:
    """A symbol the grant does not list is refused without asking the exchange anything."""
    text = 'version = 1\nclient = "bot"\n[[grants]]\naccount = "main"\nallow = ["trade"]\n' \
        'symbols = ["ETHUSDT"]\nprice_band = "2%"\n'
    policies = PolicySet({"bot": parse_file(Path("p.toml"), text.encode())})
    sender = FakeSender()
    runtime = PolicyRuntime(None, ReferencePrices(sender))

    async def run() -> EvalContext:
        return await runtime.context(policies, "bot", "main", BINANCE.prepare(ORDER), exchange=BINANCE,
                                     base_url="http://x")

    context = asyncio.run(run())
    assert sender.calls == [] and context.reference_prices == {}
    assert evaluate(policies, "bot", "main", BINANCE.prepare(ORDER), context).rule == "symbols"


def test_runtime_static_rules_follow_a_reloaded_policy_set() -> None:
    """The static rules are kept per policy set: a reload that grants the symbol is in force
    at once, and one that takes it away again too."""
    text = 'version = 1\nclient = "bot"\n[[grants]]\naccount = "main"\nallow = ["trade"]\n' \
        'symbols = ["{symbol}"]\nprice_band = "2%"\n'
    sets = [PolicySet({"bot": parse_file(Path("p.toml"), text.format(symbol=s).encode())}, version=s)
            for s in ("ETHUSDT", "BTCUSDT", "ETHUSDT")]
    sender = FakeSender()
    runtime = PolicyRuntime(None, ReferencePrices(sender))

    async def calls(policies: PolicySet) -> int:
        before = len(sender.calls)
        await runtime.context(policies, "bot", "main", BINANCE.prepare(ORDER), exchange=BINANCE,
                              base_url="http://x")
        return len(sender.calls) - before

    async def run() -> list[int]:
        return [await calls(policies) for policies in (*sets, sets[0])]

    # only a set that grants BTCUSDT reads its reference price (for the band)
    assert asyncio.run(run()) == [0, 1, 0, 0]

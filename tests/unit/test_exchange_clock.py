"""Exchange clock offsets: server-time parsers on the exchanges' documented answers, the NTP-style
offset arithmetic, sample filtering, and the tracker with a scripted exchange (no I/O)."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy import exchanges
from proxy.errors import AccountPaused
from proxy.exchanges.server_time import ServerTime, epoch_ms
from proxy.guards.clock import ExchangeClock, Sample, Target, best_offset, sample_offset, targets_for
from proxy.guards.hooks import ExchangeSafety
from proxy.model.request import Outbound
from proxy.ops.metrics import Metrics
from proxy.upstream import UpstreamResponse

#: (exchange, the documented example answer, its time in ms): from each exchange's API docs
DOCUMENTED = [
    ("binance", b'{"serverTime": 1499827319559}', 1499827319559),
    ("bybit", b'{"retCode":0,"retMsg":"OK","result":{"timeSecond":"1688639403",'
              b'"timeNano":"1688639403423213947"},"retExtInfo":{},"time":1688639403423}', 1688639403423),
    ("okx", b'{"code":"0","msg":"","data":[{"ts":"1597026383085"}]}', 1597026383085),
    ("bitget", b'{"code":"00000","msg":"success","requestTime":1688008631614,'
               b'"data":{"serverTime":"1688008631614"}}', 1688008631614),
    ("coinbase", b'{"iso":"2023-05-10T14:58:41Z","epochSeconds":"1683730721",'
                 b'"epochMillis":"1683730721123"}', 1683730721123),
    ("deribit", b'{"jsonrpc":"2.0","id":7365,"result":1550147385946}', 1550147385946),
]
PATHS = {
    "binance": "/api/v3/time", "bybit": "/v5/market/time", "okx": "/api/v5/public/time",
    "bitget": "/api/v2/public/time", "coinbase": "/api/v3/brokerage/time",
    "deribit": "/api/v2/public/get_time",
}


@pytest.mark.parametrize(("name", "body", "expected"), DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_server_time_parses_documented_answers(name: str, body: bytes, expected: int) -> None:
    server_time = exchanges.get(name).capabilities.server_time
    assert server_time is not None
    assert server_time.parse(body) == expected
    request = server_time.request()
    assert (request.method, request.path_and_query, request.headers, request.body) == (
        "GET", PATHS[name], (), b"")


def test_server_time_declared_for_window_exchanges_only() -> None:
    for name in exchanges.NAMES:
        exchange = exchanges.get(name)
        declared = exchange.capabilities.server_time
        if exchange.nonce_unit is not None or name == "bitstamp":
            assert declared is None, name
        else:
            assert isinstance(declared, ServerTime), name


@pytest.mark.parametrize("body", [
    b"", b"not json", b"{}", b'{"serverTime": "12ab"}', b'{"serverTime": 1.5e12}',
    b'{"serverTime": true}', b'{"serverTime": 17}', b'{"serverTime": -1499827319559}',
    b'{"serverTime": 99999999999999999}', b"[1499827319559]",
])
def test_server_time_refuses_what_is_not_a_clock(body: bytes) -> None:
    with pytest.raises(ValueError):
        ServerTime("/api/v3/time", ("serverTime",)).parse(body)


def test_server_time_units_are_exact() -> None:
    assert epoch_ms("1688639403423213947", "ns") == 1688639403423
    assert epoch_ms(1688639403, "s") == 1688639403000
    assert epoch_ms("1688639403423") == 1688639403423
    with pytest.raises(ValueError):
        epoch_ms("١٦٨٨٦٣٩٤٠٣٤٢٣")  # Unicode digits are not digits here


def test_sample_offset_is_server_minus_midpoint() -> None:
    # sent at 1000.000 s, received at 1000.100 s, server said 1300.050 s: offset +300 s
    assert sample_offset(1_300_050, 1_000_000_000_000, 1_000_100_000_000) == 300_000
    assert sample_offset(820_050, 1_000_000_000_000, 1_000_100_000_000) == -180_000


def test_best_offset_drops_long_round_trips_and_takes_the_median() -> None:
    samples = [Sample(100, 5.0), Sample(104, 6.0), Sample(5000, 1500.0), Sample(102, 4.0)]
    best = best_offset(samples, max_rtt_ms=1000)
    assert best == Sample(102, 4.0)
    assert best_offset([Sample(1, 2000.0)], max_rtt_ms=1000) is None


class _FakeExchange:
    """A scripted exchange and host: each send takes ``rtt_ms`` and the exchange's clock is
    ``skew_ms`` ahead of the host's; it answers at the middle of the round trip."""

    def __init__(self, skew_ms: int, rtt_ms: int = 20) -> None:
        self.wall_ns = 1_700_000_000_000_000_000
        self.skew_ms, self.rtt_ms = skew_ms, rtt_ms
        self.fail = False
        self.sent: list[tuple[str, Outbound]] = []

    def now(self) -> int:
        return self.wall_ns

    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse:
        self.sent.append((base_url, out))
        self.wall_ns += self.rtt_ms * 500_000
        server_ms = self.wall_ns // 1_000_000 + self.skew_ms
        self.wall_ns += self.rtt_ms * 500_000
        if self.fail:
            return UpstreamResponse(503, (), b"busy", float(self.rtt_ms))
        return UpstreamResponse(200, (), json.dumps({"serverTime": server_ms}).encode(), float(self.rtt_ms))


def _clock(fake: _FakeExchange, metrics: Metrics | None = None) -> ExchangeClock:
    target = Target("binance-main", "http://exchange.test", ServerTime("/api/v3/time", ("serverTime",)))
    return ExchangeClock(fake, [target], metrics, wall_ns=fake.now, mono_ns=fake.now)


def test_exchange_clock_measures_the_skew() -> None:
    fake, metrics = _FakeExchange(skew_ms=300_000), Metrics()
    clock = _clock(fake, metrics)
    assert clock.offset_ms("binance-main") == 0, "host clock until measured"
    measured = asyncio.run(clock.measure(clock.targets["binance-main"]))
    assert measured is not None and measured.offset_ms == 300_000 and measured.rtt_ms == 20
    assert clock.offset_ms("binance-main") == 300_000
    assert len(fake.sent) == 3 and fake.sent[0][0] == "http://exchange.test"
    assert 'proxy_exchange_clock_offset_ms{account="binance-main"' in metrics.render()
    assert clock.detail()["binance-main"] == {"offset_ms": 300_000, "rtt_ms": 20.0,
                                              "measured_at": fake.now() // 1_000_000_000}


def test_exchange_clock_failed_round_keeps_the_last_offset() -> None:
    fake = _FakeExchange(skew_ms=-180_000)
    clock = _clock(fake, Metrics())
    asyncio.run(clock.measure(clock.targets["binance-main"]))
    fake.fail, fake.skew_ms = True, 0
    assert asyncio.run(clock.measure(clock.targets["binance-main"])) is None
    assert clock.offset_ms("binance-main") == -180_000
    assert "503" in str(clock.detail()["binance-main"])


def test_exchange_clock_follows_a_host_clock_step_between_measurements() -> None:
    fake = _FakeExchange(skew_ms=300_000)
    mono = [fake.now()]

    def mono_ns() -> int:
        return fake.now() - mono[0] + 5_000_000_000  # a monotonic clock with its own origin

    target = Target("binance-main", "http://exchange.test", ServerTime("/api/v3/time", ("serverTime",)))
    clock = ExchangeClock(fake, [target], wall_ns=fake.now, mono_ns=mono_ns)
    asyncio.run(clock.measure(target))
    assert clock.offset_ms("binance-main") == 300_000
    fake.wall_ns += 60_000_000_000  # the host's wall clock jumps a minute ahead ...
    mono[0] += 60_000_000_000       # ... while the monotonic clock does not
    assert clock.offset_ms("binance-main") == 240_000


def test_exchange_clock_ignores_slow_samples() -> None:
    fake = _FakeExchange(skew_ms=1000, rtt_ms=3000)
    clock = _clock(fake)
    assert asyncio.run(clock.measure(clock.targets["binance-main"])) is None
    assert clock.offset_ms("binance-main") == 0


def test_exchange_clock_first_round_then_waits() -> None:
    async def scenario() -> int:
        fake = _FakeExchange(skew_ms=42_000)
        clock = _clock(fake)
        task = asyncio.create_task(clock.run())
        await clock.wait_first_round(5)
        task.cancel()
        return clock.offset_ms("binance-main")

    assert asyncio.run(scenario()) == 42_000


def test_targets_for_window_exchanges_with_tracking_on() -> None:
    found = targets_for({
        "b": ("http://b", exchanges.get("binance"), True),
        "off": ("http://o", exchanges.get("okx"), False),
        "k": ("http://k", exchanges.get("kraken"), True),
        "s": ("http://s", exchanges.get("bitstamp"), True),
    })
    assert [t.account for t in found] == ["b"]


def _guarded(fake: _FakeExchange) -> tuple[ExchangeClock, ExchangeSafety]:
    clock = _clock(fake, Metrics())
    safety = ExchangeSafety(store=None, metrics=Metrics(), clock=lambda: fake.now() / 1e9)
    safety.know_accounts([("binance-main", "binance", "http://exchange.test")])
    clock.guard = safety
    return clock, safety


def test_exchange_clock_sends_nothing_while_the_account_is_paused() -> None:
    fake = _FakeExchange(skew_ms=5_000)
    clock, safety = _guarded(fake)

    async def run() -> None:
        await safety.observe("binance-main", "binance", 429, (("Retry-After", "60"),), b"{}")
        assert await clock.measure(clock.targets["binance-main"]) is None

    asyncio.run(run())
    assert fake.sent == []
    detail = clock.detail()["binance-main"]
    assert isinstance(detail, dict) and "error" not in detail  # skipped, not failed


class _Banned(_FakeExchange):
    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse:
        self.sent.append((base_url, out))
        return UpstreamResponse(418, (("Retry-After", "120"),), b'{"code":-1003}', 1.0)


def test_exchange_clock_answer_418_starts_the_ip_ban_and_stops_the_round() -> None:
    fake = _Banned(skew_ms=0)
    clock, safety = _guarded(fake)

    async def run() -> None:
        assert await clock.measure(clock.targets["binance-main"]) is None
        with pytest.raises(AccountPaused):
            await safety.check_pause("binance-main")

    asyncio.run(run())
    assert len(fake.sent) == 1, "no second sample after the ban"

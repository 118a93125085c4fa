"""keys status: the rotation-age decision, with "now" injected (Vault's times cannot be faked)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.keys.age import EXIT_ERROR, EXIT_ROTATE, KeyState, assess, exit_code
from proxy.keys.vault import parse_vault_time

CREATED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_key_age_just_under_90_days_is_ok() -> None:
    r = assess(KeyState("a", 3, CREATED), CREATED + timedelta(days=89, hours=23, minutes=59), 90)
    assert r.status == "ok" and r.message == ""
    assert exit_code([r]) == 0


def test_key_age_exactly_90_days_is_not_yet_past() -> None:
    r = assess(KeyState("a", 3, CREATED), CREATED + timedelta(days=90), 90)
    assert r.status == "ok"
    assert r.as_dict()["age_days"] == 90.0


def test_key_age_one_second_past_90_days_warns_with_the_procedure() -> None:
    r = assess(KeyState("a", 3, CREATED), CREATED + timedelta(days=90, seconds=1), 90)
    assert r.status == "rotate"
    assert "90 days" in r.message and "keys rotate" in r.message and "exchange" in r.message
    assert exit_code([r]) == EXIT_ROTATE == 5


def test_key_age_threshold_is_configurable() -> None:
    now = CREATED + timedelta(days=31)
    assert assess(KeyState("a", 1, CREATED), now, 30).status == "rotate"
    assert assess(KeyState("a", 1, CREATED), now, 31).status == "ok"


def test_key_age_report_fields() -> None:
    r = assess(KeyState("binance-main", 7, CREATED), CREATED + timedelta(days=1, hours=12), 90)
    assert r.as_dict() == {"account": "binance-main", "status": "ok", "version": 7,
                           "created": "2026-01-01T12:00:00Z", "age_days": 1.5}


def test_key_age_errors_win_over_warnings() -> None:
    old = assess(KeyState("a", 1, CREATED), CREATED + timedelta(days=400), 90)
    broken = assess(KeyState("b", error="no secret at secret/x"), CREATED, 90)
    assert broken.status == "error" and broken.as_dict()["error"] == "no secret at secret/x"
    assert exit_code([old, broken]) == EXIT_ERROR
    assert exit_code([old]) == EXIT_ROTATE


def test_key_age_clock_skew_never_gives_negative_age() -> None:
    r = assess(KeyState("a", 1, CREATED), CREATED - timedelta(seconds=5), 90)
    assert r.status == "ok" and r.age_s == 0


def test_parse_vault_time_keeps_microseconds_of_nanosecond_times() -> None:
    assert parse_vault_time("2026-03-04T05:06:07.123456789Z") == datetime(
        2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    assert parse_vault_time("2026-03-04T05:06:07Z") == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert parse_vault_time("2026-03-04T07:06:07.5+02:00") == datetime(
        2026, 3, 4, 5, 6, 7, 500000, tzinfo=UTC)
    assert parse_vault_time("") is None and parse_vault_time("yesterday") is None

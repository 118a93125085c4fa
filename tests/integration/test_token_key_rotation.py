"""The token-signing key rotates on running proxies (issue 12, case 3), through
``serve --workers 2`` and a real OpenBao: after ``token rotate-key`` every worker refuses a
token forged with the old (leaked) key and accepts one from the new key, within seconds and
without a restart; ``--overlap`` keeps the old key verifying for that long, and no longer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

POLICY = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read"]\n'
ROUNDS = 6  # requests per check: both workers answer some


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec("binance-main", "binance", {"api_key": "rotKey0123456789", "api_secret": "k" * 64})]
    with start_stack(tmp_path_factory.mktemp("token-rotation"), accounts, {"bot": POLICY}, workers=2) as s:
        yield s


def status(stack: Stack, token: str) -> int:
    with httpx.Client(base_url=stack.proxy_url, timeout=10) as client:  # a new connection each time
        return client.get("/x/binance-main/api/v3/account",
                          headers={"Proxy-Authorization": f"Bearer {token}"}).status_code


def always(stack: Stack, token: str, code: int) -> bool:
    return all(status(stack, token) == code for _ in range(ROUNDS))


def within(seconds: float, what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_token_rotation_refuses_the_old_key_and_accepts_the_new_without_restart(stack: Stack) -> None:
    old = stack.token("bot")  # as if forged with the leaked key
    assert always(stack, old, 200)
    pids = [p.pid for p in stack.procs]
    rotated = stack.cli("token", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "refused from now on" in rotated.stderr
    new = stack.token("bot")
    within(15, "every worker verifies with the new key", lambda: always(stack, new, 200))
    assert always(stack, old, 401)
    assert [p.pid for p in stack.procs] == pids and all(p.poll() is None for p in stack.procs)


def test_token_rotation_overlap_keeps_the_previous_key_for_that_long_only(stack: Stack) -> None:
    older = stack.token("bot")
    rotated = stack.cli("token", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    previous = stack.token("bot")
    within(15, "the first rotation is in force", lambda: always(stack, previous, 200))
    rotated = stack.cli("token", "rotate-key", "--overlap", "1h")
    assert rotated.returncode == 0 and "accepted until" in rotated.stderr, rotated.stderr
    new = stack.token("bot")
    within(15, "the second rotation is in force", lambda: always(stack, new, 200))
    assert always(stack, previous, 200)  # the overlap: the key just replaced still verifies
    assert always(stack, older, 401)     # two rotations ago: never
    # the overlap ends when the operator says so: a rotation without one refuses it at once
    assert stack.cli("token", "rotate-key").returncode == 0
    newest = stack.token("bot")
    within(15, "the third rotation is in force", lambda: always(stack, newest, 200))
    assert always(stack, previous, 401) and always(stack, new, 401)

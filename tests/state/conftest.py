"""Fixtures: both backends against real servers (a real Redis process, a real sqlite file)."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.state import StateStore, open_store
from proxy.state.base import wall_clock_us
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@dataclass(frozen=True)
class Target:
    """Where a store lives, in a form a subprocess can reopen."""

    backend: str
    location: str  # sqlite path or redis url
    prefix: str

    def open(self, clock: Callable[[], int] = wall_clock_us) -> StateStore:
        if self.backend == "sqlite":
            return open_store("sqlite", path=Path(self.location), url=None, clock=clock)
        return open_store("redis", path=None, url=self.location, clock=clock, prefix=self.prefix)

    def argv(self) -> list[str]:
        return [self.backend, self.location, self.prefix]


@pytest.fixture(params=["sqlite", "redis"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    if request.param == "sqlite":
        return Target("sqlite", str(tmp_path / "state.db"), prefix)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Target("redis", server.url, prefix)


REPO_ROOT = Path(__file__).resolve().parents[2]


def spawn(target: Target, cmd: str, *args: str) -> subprocess.Popen[str]:
    """Start ``tests.state.workers CMD`` against the same store, stdout piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state.workers", cmd, *target.argv(), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> str:
    """The worker's next line, or fail (instead of hanging) if it says nothing in time."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, "worker said nothing in time"
    return proc.stdout.readline().strip()


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()

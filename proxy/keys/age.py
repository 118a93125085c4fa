"""Key age: is an account's key version older than the rotation age? (``keys status``).

Pure: "now" is an argument, so the 90-day boundary is tested without waiting 90 days (Vault's
``created_time`` cannot be faked). The exchanges' own guides say to rotate every 90 days.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

#: exit code of ``keys status`` when a key is past the rotation age (errors win: exit 1)
EXIT_ROTATE = 5
EXIT_ERROR = 1

Status = Literal["ok", "rotate", "error"]


@dataclass(frozen=True)
class KeyState:
    """What Vault says about one account's current key version (or why it could not say)."""

    account: str
    version: int | None = None
    created: datetime | None = None
    error: str = ""


@dataclass(frozen=True)
class KeyReport:
    account: str
    status: Status
    version: int | None
    created: str | None
    age_s: int | None
    message: str

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"account": self.account, "status": self.status}
        if self.version is not None:
            out["version"] = self.version
        if self.created is not None:
            out["created"] = self.created
        if self.age_s is not None:
            out["age_days"] = round(self.age_s / 86400, 2)
        if self.message:
            out["error" if self.status == "error" else "warning"] = self.message
        return out


def age_seconds(created: datetime, now: datetime) -> int:
    return max(0, int((now - created).total_seconds()))


def assess(state: KeyState, now: datetime, warn_days: int) -> KeyReport:
    """``rotate`` once the key is strictly older than ``warn_days`` days."""
    if state.error or state.version is None or state.created is None:
        return KeyReport(state.account, "error", state.version, None, None,
                         state.error or "Vault gave no creation time for the current version")
    age = age_seconds(state.created, now)
    created = state.created.isoformat().replace("+00:00", "Z")
    if age > warn_days * 86400:
        message = (f"key version {state.version} is {age // 86400} days old, past the rotation age of "
                   f"{warn_days} days: add a new key at the exchange, run `keys rotate`, then delete "
                   "the old key at the exchange")
        return KeyReport(state.account, "rotate", state.version, created, age, message)
    return KeyReport(state.account, "ok", state.version, created, age, "")


def exit_code(reports: Iterable[KeyReport]) -> int:
    statuses = {r.status for r in reports}
    if "error" in statuses:
        return EXIT_ERROR
    return EXIT_ROTATE if "rotate" in statuses else 0

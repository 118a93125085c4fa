"""What the configuration and policy schemas share: strict tables, and problems in our words.

pydantic validates the files (``proxy/config.py``, ``proxy/policy/schema.py``); these helpers
make its errors read as the files do: ``where: problem; use X``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError


class Table(BaseModel):
    """One TOML table: strict types (no "5" for 5), unknown keys refused, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def problem(text: str, key: str = "") -> PydanticCustomError:
    """A problem in our words (it says what to use); ``key`` names the key (``a.b[0]``) when a
    check of a whole table finds it."""
    return PydanticCustomError("problem", "{problem}", {"problem": text, "key": key})


def ours(error: Mapping[str, Any]) -> str | None:
    """The text of a :func:`problem`, or None for pydantic's own errors."""
    return str(error["ctx"]["problem"]) if error["type"] == "problem" else None


def location(error: Mapping[str, Any]) -> list[str | int]:
    """Where in the file: pydantic's location, then the key a table check named."""
    loc: list[str | int] = list(error["loc"])
    key = str((error.get("ctx") or {}).get("key") or "")
    loc += [int(k[1:-1]) if k.startswith("[") else k for k in re.split(r"\.|(?=\[)", key) if k]
    return loc


def dotted(loc: Sequence[str | int]) -> str:
    """``grants[0].per_symbol.BTCUSDT``, as the file's own tables read."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")

"""Validators and small value types the configuration's tables share (pydantic v2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Strict,
    ValidationInfo,
)

from proxy.model.schema import problem as _bad

_ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KV_PATH = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*")
_TRANSIT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
MAX_POOL = 32


def _between(low: float, high: float, problem: str) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise _bad(problem)
        return value
    return AfterValidator(check)


def _choice(*options: str, problem: str = "", unsupported: bool = False) -> BeforeValidator:
    """A string that must be one of ``options``: ``'x': use "a" or "b"``."""
    use = problem or "use " + " or ".join(f'"{o}"' for o in options)
    lead = " is not supported; " if unsupported else ": "

    def check(value: object) -> object:
        if isinstance(value, str) and value not in options:
            raise _bad(f"{value!r}{lead}{use}")
        return value
    return BeforeValidator(check)


def _relative_path(value: object, info: ValidationInfo) -> object:
    """A path in the file is relative to the file's folder."""
    if not isinstance(value, str):
        return value  # the type check says "must be a str"
    path = Path(value)
    base: Path = (info.context or {})["dir"]
    return path if path.is_absolute() else base / path


def _kv_path(example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not _KV_PATH.fullmatch(value):
            raise _bad(f"must be a plain KV path such as \"{example}\"")
        return value
    return AfterValidator(check)


FilePath = Annotated[Path, Strict(False), BeforeValidator(_relative_path)]


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _listen(value: object) -> object:
    if not isinstance(value, str):
        raise _bad("must be a str")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"{value!r} is not host:port; use e.g. \"127.0.0.1:8700\"")
    return Listen(host.strip("[]"), int(port))


ListenText = Annotated[Listen, BeforeValidator(_listen)]

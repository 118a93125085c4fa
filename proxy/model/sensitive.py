"""Values that must never be printed: a redacting wrapper and constant-time comparison."""

from __future__ import annotations

import hmac
from typing import NoReturn, final


@final
class Secret:
    """A secret string that redacts itself everywhere except :meth:`reveal`.

    ``repr``, ``str``, f-strings, logging, tracebacks with locals and pickling all see
    ``Secret('***')``; only signing code calls ``reveal()``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "Secret('***')"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and constant_time_equal(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """Compare without leaking, through timing, where two values first differ."""
    ab = a.encode() if isinstance(a, str) else a
    bb = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(ab, bb)

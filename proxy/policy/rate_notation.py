"""The policies' rate notation: ``"20/second"``, ``"20 per second"``, ``"5 per 10 seconds"``,
several joined by ``,``, ``;`` or ``|``.

It is the notation of the ``limits`` library, whose parser the policies used before our own
Redis counter replaced the rest of that library: the same grammar (case-insensitive, plurals,
an absent or zero multiple meaning one), so every policy file reads as it did.
"""

from __future__ import annotations

import re

_ONE = r"\s*([0-9]+)\s*(?:/|\s*per\s*)\s*([0-9]+)?\s*([a-z]+)\s*"
_ONE_RATE = re.compile(_ONE, re.IGNORECASE)
_RATES = re.compile(rf"^{_ONE}(?:[,;|]{_ONE})*$", re.IGNORECASE)
SEPARATORS = re.compile(r"[,;|]")

#: seconds per unit, as the limits library counts them (a month of 30 days, a year of 12 months)
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2_592_000, "year": 31_104_000}


def parse_rates(text: str) -> list[tuple[int, int]]:
    """Each rate of ``text`` as (amount, window in seconds); ValueError if it is not the notation."""
    if not _RATES.match(text):
        raise ValueError("not a rate")
    out = []
    for part in SEPARATORS.split(text):
        match = _ONE_RATE.match(part)
        assert match is not None  # the whole text matched
        amount, multiples, unit = match.groups()
        unit = unit.lower()
        seconds = UNITS.get(unit) or UNITS.get(unit.removesuffix("s"))  # "seconds", not "secondss"
        if seconds is None:
            raise ValueError(f"no unit {unit!r}")
        out.append((int(amount), seconds * (int(multiples or 0) or 1)))
    return out

"""Strict decimal strings: one spelling per number, so policy and exchange read the same value.

Refused rather than normalised: exponents, signs, NaN/Infinity, leading zeros, a bare or
trailing dot, whitespace, non-ASCII digits, hex, and more decimals than allowed.
"""

from __future__ import annotations

import re
from decimal import Decimal

from proxy.errors import BadRequest

# [0-9] (not \d) so that Unicode digits such as '１' never match.
_CANONICAL = re.compile(r"(?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,18})?")
_INTEGER = re.compile(r"(?:0|[1-9][0-9]{0,18})")


def parse_decimal(text: str, field: str, *, allow_negative: bool = False) -> Decimal:
    """Parse ``text`` as a plain non-negative decimal, or raise :class:`BadRequest` naming ``field``."""
    body = text
    negative = False
    if allow_negative and text.startswith("-"):
        negative, body = True, text[1:]
    if not _CANONICAL.fullmatch(body):
        raise BadRequest(
            f"{field}: {text[:40]!r} is not a plain decimal; "
            "use digits with an optional '.' and fraction, no sign, exponent or leading zeros"
        )
    value = Decimal(body)
    return -value if negative else value


def parse_integer(text: str, field: str) -> int:
    """Parse ``text`` as a plain non-negative integer, or raise :class:`BadRequest`."""
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"{field}: {text[:40]!r} is not a plain non-negative integer")
    return int(text)


def decimal_from_config(text: object, where: str) -> Decimal:
    """Parse a decimal from configuration or policy; ValueError with a message on failure."""
    if not isinstance(text, str):
        raise ValueError(f"{where}: must be a decimal string such as \"0.5\"; use quotes")
    if not _CANONICAL.fullmatch(text):
        raise ValueError(f"{where}: {text!r} is not a plain decimal; use a string such as \"0.5\"")
    return Decimal(text)

"""What every exchange module provides, and the strict parsing they all share.

An exchange module is pure: no I/O, no clock, no environment. Time and nonces arrive in a
:class:`~proxy.model.request.Stamp`. A module exposes one object named ``EXCHANGE`` that
satisfies :class:`Exchange`.

The parsing helpers here refuse anything that two parsers could read differently (duplicate
keys, bad escapes, JSON duplicates, NaN, exponents) instead of guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

from proxy.errors import BadRequest, EndpointForbidden, InstrumentError
from proxy.model.request import Action, Category, Endpoint, Inbound, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import AsymmetricKey, HmacKey

if TYPE_CHECKING:  # capabilities imports this module's parsers
    from proxy.exchanges.capabilities import Capabilities

MAX_PARAMS = 64
MAX_VALUE_LEN = 1024
MAX_JSON_DEPTH = 8
#: digits in one JSON number: far beyond any price or size, far below Python's int limit
MAX_NUMBER_DIGITS = 64

NonceUnit = Literal["ms", "us"]
Environment = Literal["live", "testnet"]


@dataclass(frozen=True, repr=False)
class Credentials:
    """An account's loaded credentials. The repr shows only the key kind."""

    api_key: str
    key: HmacKey | AsymmetricKey
    passphrase: Secret | None = None
    version: int = 0

    def __repr__(self) -> str:
        return f"Credentials(key={self.key!r}, version={self.version})"


class Exchange(Protocol):
    """The pure surface of one exchange. Its members are read-only, so the exchanges' frozen
    dataclasses satisfy it (an account's options make a modified copy, never a mutation)."""

    @property
    def name(self) -> str:
        """The exchange's name in configuration (its key in the registry)."""
        ...

    @property
    def nonce_unit(self) -> NonceUnit | None:
        """None for window-based exchanges; otherwise the unit of a strictly increasing nonce."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """Everything generic code may ask of the exchange beyond parsing and signing."""
        ...

    def base_url(self, environment: Environment) -> str:
        """The official base URL for ``environment``."""
        ...

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        """Build credentials from Vault fields; ValueError (no secret text) if malformed."""
        ...

    def prepare(self, inbound: Inbound) -> Prepared:
        """Classify, strip auth, canonicalise and extract intents; raise a Refusal if unsure."""
        ...

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        """Add authentication for ``host`` (the netloc actually sent to)."""
        ...


def require_secret(fields: Mapping[str, Secret], name: str) -> Secret:
    """A non-empty field of the account's Vault secret; ValueError naming it (never its value).

    Surrounding whitespace is refused: ``bao kv put ... api_secret=@file`` keeps the file's
    final newline, the proxy would sign with it and the exchange refuse every request with no
    hint why. A PEM key (which ends with a newline by format) is the exception."""
    value = fields.get(name)
    if value is None or not value.reveal():
        raise ValueError(f"{name}: missing from the Vault secret")
    text = value.reveal()
    if text != text.strip() and not text.lstrip().startswith("-----BEGIN "):
        raise ValueError(f"{name}: starts or ends with whitespace (a newline from a file?); "
                         "write it again without it (`keys rotate` reads JSON from stdin)")
    return value


def json_text(obj: Mapping[str, Any], key: str) -> str | None:
    """A JSON field that must be a string when present: money as strings avoids float games."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"body: {key!r} must be a JSON string, e.g. \"0.01\"")
    return value


# ---------------------------------------------------------------- paths and the catalogue

_PATH_CHARS = re.compile(r"/[A-Za-z0-9_\-./]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_\-.]+")


def check_path(raw_path: str) -> str:
    """Refuse encodings, traversal, empty segments and odd characters in an exchange path."""
    if not raw_path.startswith("/") or not _PATH_CHARS.fullmatch(raw_path):
        raise BadRequest("path: only letters, digits and '/_-.' are allowed, with no encoding")
    segments = raw_path[1:].split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise BadRequest("path: empty, '.' or '..' segments are not allowed; send the exact path")
    return raw_path


class Catalogue:
    """Endpoints by (method, path). ``{name}`` in a path matches one plain segment.

    A path that matches only when case is ignored is a bad request (a case game); a path that
    matches nothing is endpoint_forbidden.
    """

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._exact: dict[tuple[str, str], Endpoint] = {}
        self._templates: list[tuple[str, tuple[str, ...], Endpoint]] = []
        self._lower: set[str] = set()
        for ep in endpoints:
            self._lower.add(ep.path.lower())
            if "{" in ep.path:
                self._templates.append((ep.method, tuple(ep.path[1:].split("/")), ep))
            else:
                key = (ep.method, ep.path)
                if key in self._exact:
                    raise ValueError(f"duplicate endpoint {key}")
                self._exact[key] = ep

    @property
    def endpoints(self) -> list[Endpoint]:
        return [*self._exact.values(), *(ep for _, _, ep in self._templates)]

    def lookup(self, method: str, path: str) -> Endpoint:
        path = check_path(path)
        ep = self._exact.get((method, path)) or self._match_template(method, path)
        if ep is None:
            if path.lower() in self._lower and path not in {e.path for e in self.endpoints}:
                raise BadRequest("path: letter case differs from the exchange's path; use its exact case")
            raise EndpointForbidden(f"{method} {path} is not an endpoint this proxy allows")
        if ep.action is Action.FORBIDDEN:
            raise EndpointForbidden(f"{method} {path} is a {ep.category} endpoint; never allowed")
        return ep

    def _match_template(self, method: str, path: str) -> Endpoint | None:
        parts = path[1:].split("/")
        for m, tpl, ep in self._templates:
            if m != method or len(tpl) != len(parts):
                continue
            if all(
                (t.startswith("{") and _SEGMENT.fullmatch(p)) or t == p
                for t, p in zip(tpl, parts, strict=True)
            ):
                return ep
        return None


def endpoint(
    method: str, path: str, category: Category, action: Action | None = None, *,
    name: str = "", batch: bool = False,
) -> Endpoint:
    """Shorthand for catalogue tables; the action defaults from the category."""
    default = {
        Category.PUBLIC: Action.PUBLIC, Category.READ: Action.QUERY, Category.TRADE: Action.PLACE,
        Category.CANCEL: Action.CANCEL, Category.WITHDRAW: Action.FORBIDDEN,
        Category.TRANSFER: Action.FORBIDDEN, Category.ADMIN: Action.FORBIDDEN,
    }[category]
    return Endpoint(method, path, category, action or default, name=name, batch=batch)


# ---------------------------------------------------------------- form / query strings

_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_PCT_BYTE = re.compile(r"%([0-9A-Fa-f]{2})")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
#: RFC 3986 unreserved characters only: such text is its own canonical encoding
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")

Pairs = tuple[tuple[str, str], ...]


def _unquote_strict(part: str, where: str) -> str:
    if "%" not in part and "+" not in part and part.isascii():
        # Nothing to decode (the common case): ASCII decodes to itself, so only control
        # characters can make it wrong; the same refusal as the full path below.
        if _CTRL.search(part):
            raise BadRequest(f"{where}: control characters are not allowed")
        return part
    if "%" in part and len(_PCT.findall(part)) != part.count("%"):
        raise BadRequest(f"{where}: malformed percent-encoding")
    raw = part.replace("+", " ")
    try:
        data = _PCT_BYTE.sub(lambda m: chr(int(m.group(1), 16)), raw)
        text = data.encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise BadRequest(f"{where}: not valid UTF-8 after percent-decoding") from None
    if _CTRL.search(text):
        raise BadRequest(f"{where}: control characters are not allowed")
    return text


def parse_pairs(raw: bytes | str, where: str) -> Pairs:
    """Parse ``a=1&b=2`` strictly: every key once, every pair with '=', valid encoding."""
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: non-ASCII bytes must be percent-encoded") from None
    if not text:
        return ()
    # nothing to decode anywhere (the common case): every part is its own text
    plain = "%" not in text and "+" not in text and text.isascii() and not _CTRL.search(text)
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        if "=" not in part:
            raise BadRequest(f"{where}: {part[:40]!r} has no '='; send key=value pairs")
        key, value = part.split("=", 1)
        if not plain:
            key = _unquote_strict(key, where)
            value = _unquote_strict(value, f"{where} parameter {key[:40]!r}")
        if not key:
            raise BadRequest(f"{where}: empty parameter name")
        if key in seen:
            raise BadRequest(f"{where}: parameter {key[:40]!r} appears more than once; send it once")
        if len(value) > MAX_VALUE_LEN:
            raise BadRequest(f"{where}: parameter {key[:40]!r} is too long")
        seen.add(key)
        pairs.append((key, value))
    if len(pairs) > MAX_PARAMS:
        raise BadRequest(f"{where}: more than {MAX_PARAMS} parameters")
    return tuple(pairs)


def encode_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    """The canonical encoding: RFC 3986 unreserved characters kept, everything else %XX."""
    if _UNRESERVED.fullmatch("".join(k + v for k, v in pairs)):  # nothing to escape
        return "&".join(f"{k}={v}" for k, v in pairs)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


def drop_keys(pairs: Pairs, keys: Iterable[str]) -> Pairs:
    banned = set(keys)
    return tuple((k, v) for k, v in pairs if k not in banned)


def split_query_and_body(inbound: Inbound, *, form_body: bool = True) -> tuple[Pairs, Pairs]:
    """Parse the query string and (for form bodies) the body; refuse a key in both."""
    query = parse_pairs(inbound.raw_query, "query")
    body: Pairs = ()
    if inbound.body and form_body:
        ctype = (inbound.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise BadRequest("body: send application/x-www-form-urlencoded for this exchange")
        body = parse_pairs(inbound.body, "body")
    both = {k for k, _ in query} & {k for k, _ in body}
    if both:
        raise BadRequest(
            f"parameter {sorted(both)[0]!r} is in both the query string and the body; send it once"
        )
    return query, body


# ---------------------------------------------------------------- JSON

class _Raw(str):
    """A pre-encoded JSON number, written back verbatim."""


def _no_constant(name: str) -> Any:
    raise BadRequest(f"body: {name} is not a number; send a decimal string")


def _strict_float(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_DIGITS + 1:
        raise BadRequest(f"body: number {text[:20]!r}... has more than {MAX_NUMBER_DIGITS} digits")
    if "e" in text or "E" in text or text.startswith("-") or text.startswith("+"):
        raise BadRequest(f"body: number {text[:40]!r} uses a sign or exponent; send a plain decimal")
    return Decimal(text)


def _strict_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise BadRequest(f"body: number {text[:20]!r}... has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise BadRequest(f"body: key {k[:40]!r} appears more than once; send it once")
        obj[k] = v
    return obj


def parse_json(body: bytes, where: str = "body") -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, no exponents.

    Non-integer numbers become :class:`~decimal.Decimal`, never float.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: not valid UTF-8") from None
    if _too_deep(text):
        raise BadRequest(f"{where}: nested too deeply")
    try:
        value = json.loads(
            text, object_pairs_hook=_object_pairs, parse_float=_strict_float,
            parse_int=_strict_int, parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{where}: not valid JSON ({exc.msg} at {exc.pos})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"{where}: nested too deeply")
    return value


def _too_deep(text: str) -> bool:
    """More brackets open at once than MAX_JSON_DEPTH allows, judged before parsing so a
    100,000-deep document never reaches the recursive parser (strings are skipped)."""
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def parse_json_object(body: bytes, where: str = "body") -> dict[str, Any]:
    value = parse_json(body, where)
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: must be a JSON object")
    return value


def _depth(value: Any) -> int:
    """Nesting depth; refuses a lone UTF-16 surrogate (``"\\ud800"``) in any key or string,
    which is no character and cannot be re-encoded for the exchange."""
    if isinstance(value, dict):
        for key in value:
            _text(key)
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, str):
        _text(value)
    return 0


def _text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("body: a \\u escape names a lone surrogate, which is no character") from None


def dump_json(value: Any) -> str:
    """Compact canonical JSON (insertion order kept); Decimals written as plain decimals."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump_json(str(k))}:{dump_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise BadRequest("body: numbers must be finite")
        return format(value, "f")
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_field(obj: Mapping[str, Any], key: str) -> str | None:
    """A JSON field that must be a string if present (numbers as strings avoid float games)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    if not isinstance(value, str):
        raise BadRequest(f"body: {key!r} must be a string")
    return value


def require_content_type(inbound: Inbound, expected: str) -> None:
    if not inbound.body:
        return
    ctype = (inbound.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != expected:
        raise BadRequest(f"body: Content-Type must be {expected}")


def reject_unused_body(inbound: Inbound) -> None:
    if inbound.body:
        raise BadRequest(f"body: {inbound.method} requests to this endpoint take no body")


# ---------------------------------------------------------------- instruments


def instrument_answer(body: bytes) -> Any:
    """The JSON of an instruments answer, numbers as Decimal; InstrumentError if not JSON."""
    if len(body) > 1024 * 1024:
        raise InstrumentError("instruments answer too large")
    try:
        return json.loads(body.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, ValueError):
        raise InstrumentError("instruments answer is not JSON") from None


def positive_decimal(value: Any, what: str) -> Decimal:
    """A positive finite decimal from a plain decimal string or JSON number."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InstrumentError(f"{what}: missing or not a number")
    text = str(value)
    if not re.fullmatch(r"[0-9]{1,24}(?:\.[0-9]{1,24})?", text):
        raise InstrumentError(f"{what}: not a plain decimal")
    number = Decimal(text)
    if number <= 0:
        raise InstrumentError(f"{what}: not positive")
    return number

"""Client order ids the proxy makes for bots that send none, and the order lookup vocabulary.

Pure (L1): the randomness arrives as an argument (the pipeline passes a fresh UUID4), so an
exchange module never reads a random source. Each exchange states its own rules
(:class:`ClientOrderIdRules`); :func:`make_client_order_id` fits a per-client prefix and as
much randomness as the field allows into them, and :func:`inbound_with` re-renders a canonical
request with one more field so the exchange module can re-``prepare`` it: what policy checks is
then exactly what is signed and sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.exchanges.base import MAX_PARAMS, dump_json, encode_pairs, parse_json, parse_json_object
from proxy.model.request import Action, Inbound, Intent, Prepared

ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: Random characters kept at most: 20 base-62 digits hold 119 bits, about all a UUID4 has.
MAX_RANDOM_CHARS = 20
#: Random characters at least: 12 base-62 digits are 71 bits, ample among one client's orders.
MIN_RANDOM_CHARS = 12
MAX_PREFIX_CHARS = 8


@dataclass(frozen=True)
class ClientOrderIdRules:
    """How one exchange spells a client order id on order placement.

    ``alphabet`` is the set of characters used for the prefix and the random part (a subset of
    what the exchange accepts: letters and digits); ``separator`` goes between them when the
    exchange allows one. ``max_int`` > 0 marks an integer id below it.
    """

    field: str
    max_len: int
    alphabet: str = ALNUM
    separator: str = "-"
    max_int: int = 0


def make_client_order_id(rules: ClientOrderIdRules, client: str, token: str) -> str:
    """A valid id for ``rules``: ``{client prefix}{separator}{random}``.

    ``token`` is the randomness (hex, e.g. ``uuid4().hex``). The prefix is the client name
    reduced to the exchange's alphabet (``px`` if nothing is left), shortened so that at least
    MIN_RANDOM_CHARS random characters fit.
    """
    entropy = int(token, 16)
    if rules.max_int > 0:
        return str(entropy % (rules.max_int - 1) + 1)
    base = len(rules.alphabet)
    prefix = "".join(c for c in client if c in rules.alphabet)[:MAX_PREFIX_CHARS] or "px"
    room = rules.max_len - len(rules.separator) - MIN_RANDOM_CHARS
    if room < 1:
        raise ValueError(f"{rules.field}: {rules.max_len} characters leave no room for a prefix")
    prefix = prefix[:room]
    n = min(MAX_RANDOM_CHARS, rules.max_len - len(prefix) - len(rules.separator))
    digits = []
    for _ in range(n):
        entropy, digit = divmod(entropy, base)
        digits.append(rules.alphabet[digit])
    return f"{prefix}{rules.separator}{''.join(digits)}"


def inbound_with(prepared: Prepared, name: str, value: str | int) -> Inbound:
    """The canonical request of ``prepared`` as an Inbound with ``name`` added: into a JSON
    body object, else into a form body, else into the query string."""
    ctype = (prepared.content_type or "").split(";")[0].strip().lower()
    query, body = prepared.query, prepared.body
    headers: tuple[tuple[str, str], ...] = ()
    if prepared.content_type:
        headers = (("content-type", prepared.content_type),)
    if ctype == "application/json":
        obj: dict[str, Any] = parse_json_object(body)
        obj[name] = value
        body = dump_json(obj).encode()
    elif body or ctype == "application/x-www-form-urlencoded":
        pair = encode_pairs([(name, str(value))]).encode()
        body = body + b"&" + pair if body else pair
    else:
        pair_text = encode_pairs([(name, str(value))])
        query = f"{query}&{pair_text}" if query else pair_text
    return Inbound(prepared.method, prepared.path, query.encode(), headers, body)


#: an id every encoding writes as is: no percent-encoding in a form or query string, no
#: escape in a JSON string (the ids the proxy makes are letters, digits and '-')
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def single_placement(prepared: Prepared) -> bool:
    """One order placed without an id: the only shape the fast injection below handles."""
    ep = prepared.endpoint
    return (ep.action is Action.PLACE and not ep.batch and len(prepared.intents) == 1
            and prepared.intents[0].client_order_id is None)


def _with_id(prepared: Prepared, coid: str, **changed: Any) -> Prepared:
    """``dataclasses.replace`` without its per-call field introspection (most of the fast
    path's time): every field copied, the named ones changed."""
    intent = Intent(**{**vars(prepared.intents[0]), "client_order_id": coid})
    return Prepared(**{**vars(prepared), "intents": (intent,), **changed})


def pair_appended(prepared: Prepared, name: str, coid: str, *, to_query: bool = False) -> Prepared | None:
    """``prepared`` with ``name=coid`` after the last pair of its canonical form body (or query
    string), the id on its one intent, without parsing the order again; None when unsure (the
    name already present, an id that would need encoding, one pair too many, no form body),
    and the caller re-parses. This is all a re-parse changes when the exchange's ``prepare``
    keeps its pairs in order and reads the id from nowhere else (tests compare the two)."""
    if not single_placement(prepared) or not _PLAIN_ID.fullmatch(coid):
        return None
    if to_query and (prepared.body or prepared.content_type):
        return None
    if not to_query and (not prepared.body.isascii() or prepared.content_type != FORM):
        return None
    text = prepared.query if to_query else prepared.body.decode("ascii")
    if not to_query and not text:
        return None
    if f"&{name}=" in f"&{text}" or (text.count("&") + 2 if text else 1) > MAX_PARAMS:
        return None
    joined = f"{text}&{name}={coid}" if text else f"{name}={coid}"
    if to_query:
        return _with_id(prepared, coid, query=joined)
    return _with_id(prepared, coid, body=joined.encode("ascii"))


def member_appended(prepared: Prepared, name: str, coid: str, *, as_int: bool = False) -> Prepared | None:
    """``prepared`` with ``"name": "coid"`` (a JSON integer ``as_int``) as the last member of
    its canonical JSON object body (``dump_json``: compact, members in order), the id on its
    one intent; None when unsure (the name anywhere in the body, an id that would need
    escaping or is no plain integer, not a JSON object), and the caller re-parses."""
    body = prepared.body
    if (not single_placement(prepared) or prepared.content_type != JSON
            or not _PLAIN_ID.fullmatch(coid) or body[:1] != b"{" or body[-1:] != b"}"
            or f'"{name}"'.encode() in body):
        return None
    if as_int and not (coid.isdigit() and coid[0] != "0"):
        return None
    member = f'"{name}":{coid}' if as_int else f'"{name}":"{coid}"'
    joined = body[:-1] + (b"," if body != b"{}" else b"") + member.encode() + b"}"
    return _with_id(prepared, coid, body=joined)


def batch_inbound_with(
    prepared: Prepared, items_key: str | None, name: str, ids: Sequence[str | int | None],
    *, item_index: int | None = None,
) -> Inbound:
    """The canonical JSON batch of ``prepared`` as an Inbound with ``ids[i]`` added as
    ``name`` to order ``i`` (None: that order keeps its own). ``items_key`` names the list
    in the body object (None: the body is the list); ``item_index`` picks the order object
    inside each entry (e.g. ``["on", {...}]``)."""
    whole: Any = parse_json(prepared.body)
    items = whole if items_key is None else whole[items_key]
    if not isinstance(items, list) or len(items) != len(ids):
        raise ValueError("batch_inbound_with: one id (or None) per order in the batch")
    for item, coid in zip(items, ids, strict=True):
        order = item if item_index is None else item[item_index]
        if coid is not None:
            order[name] = coid
    headers = (("content-type", prepared.content_type or "application/json"),)
    return Inbound(prepared.method, prepared.path, prepared.query.encode(), headers,
                   dump_json(whole).encode())


def lookup_inbound(method: str, path: str, params: list[tuple[str, str]], *, json: bool = False) -> Inbound:
    """A read request built by the proxy (order lookups): GET params in the query string, POST
    params as a form or JSON body."""
    if method == "GET":
        return Inbound(method, path, encode_pairs(params).encode(), (), b"")
    if json:
        body = dump_json(dict(params)).encode()
        return Inbound(method, path, b"", (("content-type", "application/json"),), body)
    form = encode_pairs(params).encode()
    return Inbound(method, path, b"", (("content-type", "application/x-www-form-urlencoded"),), form)


class Lookup(enum.StrEnum):
    """What the exchange said when asked for an order by client order id."""

    FOUND = "found"      # the order exists: its answer stands for the placement
    ABSENT = "absent"    # the exchange says it has no such order: placing it is safe
    UNKNOWN = "unknown"  # the answer proves neither (error, garbage): ask again later

"""Client order ids in the pipeline: injecting one, comparing order content, and the
bookkeeping that lets a retry ask the exchange about an order whose first answer was lost.

The exchange modules (pure) say how: ``capabilities.client_order_ids`` and
``with_client_order_id`` for injection, ``order_lookups`` and ``lookup_result`` for asking by
client order id. An exchange without them keeps the older behaviour (no injection; an unknown
outcome is final).

How a lost answer is remembered without a new store primitive: the idempotency record of
(client, account, id) is completed with the error answer marked ``x-proxy-outcome: unknown``.
A retry that meets the mark claims the next *round* record, (client, account, id + round n),
with the ordinary begin/wait/complete, so exactly one retry at a time (across workers and
hosts) asks the exchange, and every other retry waits for its answer and replays it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol, TypeGuard, runtime_checkable

from proxy.errors import BadRequest
from proxy.exchanges.base import Exchange, parse_json, parse_pairs
from proxy.exchanges.client_order_ids import Lookup, make_client_order_id
from proxy.model.request import Action, Prepared
from proxy.state import IdempotencyScope, StoredResponse

UNKNOWN_OUTCOME = ("x-proxy-outcome", "unknown")
#: The response header that carries a client order id the proxy made up.
INJECTED_HEADER = "x-proxy-client-order-id"
#: Retries that may each find the outcome still unknown before the proxy gives up asking.
MAX_LOOKUP_ROUNDS = 16


@runtime_checkable
class InjectsClientOrderIds(Protocol):
    """Adds ``capabilities.client_order_ids`` to a placement that has none."""

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared: ...


@runtime_checkable
class LooksUpOrders(Protocol):
    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]: ...

    def lookup_result(self, status: int, body: bytes) -> Lookup: ...


@runtime_checkable
class JudgesLookupsPerOrder(Protocol):
    """An exchange whose lookup answers are lists to search: the judgement needs
    the order, and the bot is shown only the order found."""

    def lookup_result_for(self, order: Prepared, status: int, body: bytes) -> tuple[Lookup, bytes]: ...


_KINDS: dict[tuple[type, type], bool] = {}


def _is(obj: object, protocol: type) -> bool:
    """``isinstance`` against a runtime-checkable protocol, remembered per class: the check
    walks every member each time, and it ran several times for every order."""
    key = (type(obj), protocol)
    known = _KINDS.get(key)
    if known is None:
        known = _KINDS[key] = isinstance(obj, protocol)
    return known


def injects(exchange: object) -> TypeGuard[InjectsClientOrderIds]:
    return _is(exchange, InjectsClientOrderIds)


def injects_batches(exchange: object) -> TypeGuard[InjectsBatchClientOrderIds]:
    return _is(exchange, InjectsBatchClientOrderIds)


def looks_up(exchange: object) -> TypeGuard[LooksUpOrders]:
    return _is(exchange, LooksUpOrders)


def judge(exchange: LooksUpOrders, order: Prepared, status: int, body: bytes) -> tuple[Lookup, bytes]:
    """What a lookup answer says about ``order``, and the body to show the bot if found."""
    if _is(exchange, JudgesLookupsPerOrder):
        assert isinstance(exchange, JudgesLookupsPerOrder)
        return exchange.lookup_result_for(order, status, body)
    return exchange.lookup_result(status, body), body


def wants_client_order_id(prepared: Prepared) -> bool:
    """A single order placed without a client order id."""
    ep = prepared.endpoint
    return (
        ep.action is Action.PLACE and not ep.batch and len(prepared.intents) == 1
        and prepared.intents[0].client_order_id is None
    )


@runtime_checkable
class InjectsBatchClientOrderIds(Protocol):
    def with_batch_client_order_ids(self, prepared: Prepared, ids: Sequence[str | None]) -> Prepared: ...


def is_batch_placement(prepared: Prepared) -> bool:
    return prepared.endpoint.action is Action.PLACE and prepared.endpoint.batch


def batch_ids(prepared: Prepared) -> tuple[str, ...]:
    """The client order ids of a batch placement, in batch order (all set after inject)."""
    return tuple(i.client_order_id or "" for i in prepared.intents)


def batch_scope(client: str, account: str, ids: Sequence[str]) -> IdempotencyScope:
    """The idempotency record of a whole batch: its *set* of ids (sorted, hashed). A newline
    cannot occur in any exchange's client order id, so no single id can name it."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return IdempotencyScope(client, account, f"\nbatch\n{digest}")


def inject_batch(
    exchange: Exchange, prepared: Prepared, client: str, token: str
) -> tuple[Prepared, str | None]:
    """Every order of a batch placement gets a client order id: the ones missing are made
    (one per order, from ``token``) and added where the exchange takes them in batches; where
    it does not, the batch is refused. Returns all the batch's ids, comma-separated in batch
    order, when any was injected."""
    have = [i.client_order_id for i in prepared.intents]
    sent = [c for c in have if c]
    if len(sent) != len(set(sent)):
        raise BadRequest("every order in a batch needs its own client order id; send each id once")
    if all(have):
        return prepared, None
    rules = exchange.capabilities.client_order_ids
    if rules is None or not injects_batches(exchange):
        field = rules.field if rules is not None else "client order id"
        raise BadRequest(f"{field}: every order in a batch needs a client order id (the proxy "
                         "cannot add one to this exchange's batches); send one per order")
    made = [
        None if c else make_client_order_id(
            rules, client, hashlib.sha256(f"{token}:{n}".encode()).hexdigest()[:32])
        for n, c in enumerate(have)
    ]
    changed = exchange.with_batch_client_order_ids(prepared, made)
    ids = batch_ids(changed)
    if len(changed.intents) != len(have) or not all(ids) or len(set(ids)) != len(ids):
        raise BadRequest("the proxy could not give every order in this batch a client order id; "
                         "send one per order")
    return changed, ",".join(ids)


def inject(exchange: Exchange, prepared: Prepared, client: str, token: str) -> tuple[Prepared, str | None]:
    """``prepared`` with a fresh client order id when it needs one and the exchange can take
    one; the id is returned too (None: nothing injected). Batches: :func:`inject_batch`."""
    if is_batch_placement(prepared):
        return inject_batch(exchange, prepared, client, token)
    rules = exchange.capabilities.client_order_ids
    if not wants_client_order_id(prepared) or rules is None:
        return prepared, None
    if not injects(exchange):
        return prepared, None
    coid = make_client_order_id(rules, client, token)
    changed = exchange.with_client_order_id(prepared, coid)
    if changed.client_order_id != coid:
        return prepared, None  # the exchange module declined (e.g. its id field was set)
    return changed, coid


#: What the content digest hashes (below), named in every digest as ``"{format}:{sha256 hex}"``.
#: Stored digests outlive a release (they are compared for the idempotency window), so what is
#: hashed changes only with a new number here, and :func:`earlier_digests` keeps giving the
#: older spellings: a retry of an order claimed before an upgrade then still replays instead of
#: meeting a conflict. Format 1 was stored unmarked (the bare hash) before this number existed.
DIGEST_FORMAT = 1


def content_digest(prepared: Prepared) -> str:
    """What makes two placements "the same order": method, path and every parameter, in any
    order (a retry that reorders fields or moves one between query and body is the same).
    Format 1: SHA-256 of the JSON of [method, path, sorted (name, value) pairs of the query
    and form body, the JSON body or null], keys sorted, decimals as text."""
    params: list[Any] = sorted(parse_pairs(prepared.query, "query"))
    ctype = (prepared.content_type or "").split(";")[0].strip().lower()
    body: Any = None
    if ctype == "application/json" and prepared.body:
        body = parse_json(prepared.body)
    elif prepared.body:
        params = sorted([*params, *parse_pairs(prepared.body, "body")])
    text = json.dumps([prepared.method, prepared.path, params, body], sort_keys=True, default=str)
    return f"{DIGEST_FORMAT}:{hashlib.sha256(text.encode()).hexdigest()}"


def earlier_digests(digest: str) -> tuple[str, ...]:
    """The same content as earlier releases stored it, to ask for when ``digest`` meets a
    conflict: format 1 unmarked (the same hash, without its format marker)."""
    marker, _, hashed = digest.partition(":")
    return (hashed,) if marker == "1" and hashed else ()


def round_scope(scope: IdempotencyScope, n: int) -> IdempotencyScope:
    """The record of lookup round ``n`` (0: the placement itself). A newline cannot occur in
    any exchange's client order id, so no bot id can name a round record."""
    if n == 0:
        return scope
    return IdempotencyScope(scope.client, scope.account, f"{scope.client_order_id}\n{n}")


def is_unknown(response: StoredResponse) -> bool:
    return UNKNOWN_OUTCOME in response.headers


def found_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return (*headers, ("x-proxy-order-lookup", "found"))

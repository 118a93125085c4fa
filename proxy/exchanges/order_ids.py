"""Where each exchange's answer to an order placement carries the exchange's order id. Pure.

Each exchange declares ``order_ids`` in its capabilities (proxy/exchanges/<name>/
capabilities.py): the path (keys and list indexes) of the id in the answer to one order, and
for batch endpoints the path with ``"*"`` where the list of orders is. The audit's outcome
record takes the id from there and nowhere else: a generic search finds the wrong field
(a JSON-RPC envelope's ``id`` is the request's, not the order's) or none (an answer made of
arrays).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

EVERY = "*"
"""In a batch path: every element of the list at this point."""

MAX_BODY = 256 * 1024
MAX_IDS = 100


@dataclass(frozen=True)
class OrderIds:
    """``single``: the path to the id in the answer to one order; ``batch``: the same for a batch
    endpoint, with ``EVERY`` at the list of orders (None: the exchange has no batch placement)."""

    single: tuple[str | int, ...]
    batch: tuple[str | int, ...] | None = None

    def extract(self, body: bytes, *, batch: bool = False) -> tuple[str, ...]:
        """The order ids in an answer, in order; () when the answer does not carry one there."""
        path = self.batch if batch else self.single
        if path is None or len(body) > MAX_BODY:
            return ()
        try:
            data = json.loads(body)
        except ValueError:
            return ()
        found: list[str] = []
        _walk(data, path, found)
        return tuple(found[:MAX_IDS])


def _walk(node: object, path: Sequence[str | int], out: list[str]) -> None:
    for i, step in enumerate(path):
        if step == EVERY:
            if isinstance(node, list):
                for item in node:
                    _walk(item, path[i + 1:], out)
            return
        in_list = isinstance(step, int) and isinstance(node, list) and 0 <= step < len(node)
        in_dict = isinstance(step, str) and isinstance(node, dict) and step in node
        if not (in_list or in_dict):
            return
        node = node[step]  # type: ignore[index]
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, int | str) and str(node):
        out.append(str(node))


__all__ = ["EVERY", "OrderIds"]

"""Reading the proxy's own refusals in tests, whatever exchange format they are rendered in.

Every refusal carries ``X-Proxy-Error`` and a text ``{code}: {message} (rule {rule}; request
{id})`` somewhere in its body (docs/interface.md "Refusals"): a JSON string value in the
exchange's own error shape, or the whole body when it is plain text.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

_TEXT = re.compile(r"(?P<code>[a-z_]+): (?P<message>.*) \(rule (?P<rule>[^;]+); request (?P<request_id>[0-9a-f]+)\)",
                   re.DOTALL)


def proxy_error(response: httpx.Response) -> dict[str, str]:
    """``{"code", "message", "rule", "request_id"}`` of a refusal the proxy made; AssertionError
    when the response is not one."""
    code = response.headers.get("x-proxy-error")
    assert code, f"not a proxy refusal: {response.status_code} {response.text[:300]}"
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("code") == code:  # the proxy's own JSON
        return {k: str(error.get(k, "")) for k in ("code", "message", "rule", "request_id")}
    for text in _texts(response):
        found = _TEXT.search(text)
        if found and found["code"] == code:
            return found.groupdict()
    raise AssertionError(f"no refusal text in {response.text[:300]}")


def _texts(response: httpx.Response) -> list[str]:
    try:
        data = response.json()
    except ValueError:
        return [response.text]
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return found

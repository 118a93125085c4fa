"""Every log line is one JSON object, encoded once: structured fields are the line's own keys."""

from __future__ import annotations

import json
import logging
import sys
from decimal import Decimal

from proxy.server.supervisor import JsonLines


def _line(msg: str, *, fields: dict[str, object] | None = None, exc: bool = False) -> dict[str, object]:
    record = logging.LogRecord("proxy.decision", logging.INFO, __file__, 1, msg, (), None)
    if fields is not None:
        record.fields = fields
    if exc:
        try:
            raise KeyError("secret-value")
        except KeyError:
            record.exc_info = sys.exc_info()
    text = JsonLines().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert isinstance(line, dict)
    return line


def test_structured_fields_are_the_lines_own_keys() -> None:
    line = _line("decision", fields={"request_id": "r-1", "decision": "allow", "status": 200,
                                     "notional": Decimal("1.50"), "upstream_status": None})
    assert line["request_id"] == "r-1" and line["decision"] == "allow" and line["status"] == 200
    assert line["notional"] == "1.50" and line["upstream_status"] is None
    assert line["level"] == "info" and line["logger"] == "proxy.decision" and "msg" not in line
    assert str(line["ts"]).endswith("Z")


def test_a_plain_message_is_quoted_once_even_when_it_looks_like_json() -> None:
    assert _line("worker 12 started")["msg"] == "worker 12 started"
    assert _line('{"a": 1}')["msg"] == '{"a": 1}'


def test_an_exception_names_its_type_never_its_text() -> None:
    line = _line("failed", exc=True)
    assert line["error"] == "KeyError" and "secret-value" not in json.dumps(line)


def test_no_log_call_encodes_json_itself() -> None:
    """A line encoded by its caller would be encoded twice more by the formatter."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted((Path(__file__).resolve().parents[2] / "proxy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("debug", "info", "warning", "error", "exception", "critical")
                    and node.args and isinstance(node.args[0], ast.Call)
                    and isinstance(node.args[0].func, ast.Attribute) and node.args[0].func.attr == "dumps"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"pass extra={{'fields': {{...}}}} instead: {offenders}"

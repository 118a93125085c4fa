"""DESIGN.md's layering: a lower layer never imports a higher one; the pure core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "proxy"

L0 = {"errors", "sensitive", "request_model", "decimal_text"}
L1 = {"signing_keys", "exchanges", "policy.model", "policy.evaluate", "policy.tickers"}
L3 = {"__main__", "config", "pipeline", "worker", "serve", "admin", "cli", "demo", "accounts", "dev_vault", "proxy_keys"}
IO_MODULES = {"socket", "subprocess", "requests", "httpx", "aiohttp", "hvac", "redis", "sqlite3",
              "asyncio", "os", "time", "random", "secrets", "threading", "pathlib"}
#: Calls that read a clock or a random source (uuid and datetime may be imported to *format*).
IMPURE_CALLS = {"now", "utcnow", "today", "uuid1", "uuid4", "time", "time_ns", "monotonic", "urandom"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PROXY).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _layer(name: str) -> int | None:
    if name in L0:
        return 0
    if name in L1 or name.startswith("exchanges.") or name == "exchanges":
        return 1
    if name.split(".", maxsplit=1)[0] in L3:
        return 3
    if name.startswith("emulator"):
        return 3
    return 2


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports only for type checking are not dependencies
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


FILES = sorted(p for p in PROXY.rglob("*.py") if "emulator" not in p.parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PROXY)))
def test_layers_lower_never_imports_higher(path: Path) -> None:
    me = _layer(_module_name(path))
    assert me is not None
    for imported in _imports(path):
        if not imported.startswith("proxy."):
            continue
        other = _layer(imported.removeprefix("proxy."))
        assert other is not None
        assert other <= me or (me == 2 and other == 2), f"{path.name} (L{me}) imports {imported} (L{other})"


PURE = [p for p in FILES if _layer(_module_name(p)) in (0, 1)]


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PROXY)))
def test_layers_pure_core_does_no_io(path: Path) -> None:
    banned = {i for i in _imports(path) if i.split(".")[0] in IO_MODULES}
    assert not banned, f"{path.name} imports {sorted(banned)}"
    calls = {
        node.func.attr for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in IMPURE_CALLS
    }
    assert not calls, f"{path.name} reads a clock or randomness: {sorted(calls)}"


def test_layers_emulators_do_not_use_the_proxy_signers() -> None:
    for path in (PROXY / "emulator").glob("*.py"):
        bad = {i for i in _imports(path) if i.startswith(("proxy.exchanges", "proxy.model.signers"))}
        assert not bad, f"{path.name} is not independent of the signer: {bad}"

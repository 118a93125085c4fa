"""The house's shape, checked: no import cycles, small modules, a pure core.

The layer rules themselves are import-linter contracts in pyproject.toml (``lint-imports`` in
.ci/run); this file checks what import-linter does not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "proxy_devkit")
#: "About 400 lines": one idea per module. A module past this is split, not the limit raised.
MAX_LINES = 450
#: The pure core: values, errors, exchange modules and policy evaluation.
PURE_PREFIXES = ("proxy.errors", "proxy.model", "proxy.exchanges", "proxy.policy.model", "proxy.policy.evaluate")
IO_MODULES = {"socket", "subprocess", "requests", "httpx", "aiohttp", "hvac", "redis", "sqlite3",
              "asyncio", "os", "time", "random", "secrets", "threading", "pathlib"}
#: Calls that read a clock or a random source (uuid and datetime may be imported to *format*).
IMPURE_CALLS = {"now", "utcnow", "today", "uuid1", "uuid4", "time", "time_ns", "monotonic", "urandom"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _top_level_imports(path: Path) -> set[str]:
    """Imports that run when the module is imported (not under TYPE_CHECKING, not in functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) else ():
            if isinstance(sub, ast.ImportFrom) and sub.module:
                found.add(sub.module)
                found.update(f"{sub.module}.{a.name}" for a in sub.names)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
    return {m for m in found if m in MODULES}


def test_structure_has_no_import_cycles() -> None:
    graph = {name: _top_level_imports(path) - {name} for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):  # a package importing its child is fine
                cycle = [*stack[stack.index(nxt):], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_structure_modules_are_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by idea (README 'Architecture')"


PURE = sorted(n for n in MODULES if n.startswith(PURE_PREFIXES))


@pytest.mark.parametrize("name", PURE)
def test_structure_pure_core_does_no_io(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
    assert not imported & IO_MODULES, f"{name} imports {sorted(imported & IO_MODULES)}"
    calls = {
        node.func.attr for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in IMPURE_CALLS
    }
    assert not calls, f"{name} reads a clock or randomness: {sorted(calls)}"


def test_structure_every_exception_is_in_the_one_tree() -> None:
    """proxy/errors.py writes the tree out; an exception class elsewhere would be missing from it."""
    import importlib
    import inspect

    import proxy.errors

    stray = []
    for name in sorted(n for n in MODULES if n.startswith("proxy.") and not n.endswith("__main__")):
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name and name != "proxy.errors":
                stray.append(f"{name}.{obj.__name__}")
    assert not stray, f"define these in proxy/errors.py and add them to its tree: {stray}"
    tree = proxy.errors.__doc__ or ""
    for _, obj in inspect.getmembers(proxy.errors, inspect.isclass):
        if issubclass(obj, BaseException) and obj.__module__ == "proxy.errors":
            assert obj.__name__ in tree, f"{obj.__name__} is missing from the tree in errors.py's docstring"

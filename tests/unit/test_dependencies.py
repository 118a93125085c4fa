"""The dependency list is true: every package locked by hash, every lower bound the version the
suite runs against, the serving lock free of test tools, and CI installing from the lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(name: str) -> dict[str, tuple[Version, int]]:
    """``requirements/<name>``: package -> (pinned version, number of hashes)."""
    out: dict[str, tuple[Version, int]] = {}
    current = ""
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            out[current] = (Version(m.group(2)), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = out[current]
            out[current] = (version, hashes + 1)
    return out


RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {extra: [Requirement(r) for r in reqs] for extra, reqs in PROJECT["optional-dependencies"].items()}
DECLARED = RUNTIME + [r for reqs in EXTRAS.values() for r in reqs]


def lower_bound(req: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(bounds) if bounds else None


def test_every_declared_dependency_is_locked_with_hashes() -> None:
    ci = locked("ci.txt")
    for req in DECLARED:
        name = canonicalize_name(req.name)
        assert name in ci, f"{req.name} is declared but not in requirements/ci.txt; run requirements/refresh"
        version, hashes = ci[name]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}: {version} is not {req.specifier}"
        assert hashes > 0, f"{req.name} has no hash in requirements/ci.txt"
    assert all(hashes > 0 for _, hashes in ci.values())


def test_every_lower_bound_is_the_version_the_suite_runs_against() -> None:
    ci = locked("ci.txt")
    wrong = [f"{req.name}: lower bound {lower_bound(req)}, locked {ci[canonicalize_name(req.name)][0]}"
             for req in DECLARED if lower_bound(req) != ci[canonicalize_name(req.name)][0]]
    assert not wrong, "raise these lower bounds in pyproject.toml to the locked versions: " + "; ".join(wrong)


def test_serving_lock_has_the_runtime_dependencies_at_the_tested_versions_and_no_test_tools() -> None:
    serve, ci = locked("serve.txt"), locked("ci.txt")
    assert {canonicalize_name(r.name) for r in RUNTIME} <= set(serve)
    assert all(serve[name][0] == ci[name][0] and serve[name][1] > 0 for name in serve)
    tools = {canonicalize_name(r.name) for r in EXTRAS["test"]} - {canonicalize_name(r.name) for r in RUNTIME}
    tools -= {"packaging"}  # also a dependency of limits
    assert not tools & set(serve), f"test tools in the serving lock: {sorted(tools & set(serve))}"


def test_no_package_is_declared_that_the_code_does_not_need() -> None:
    names = {canonicalize_name(r.name) for r in RUNTIME}
    assert "slowapi" not in names  # README "Dependencies": limits is used directly
    assert all(not r.extras for r in RUNTIME if canonicalize_name(r.name) == "uvicorn")


@pytest.mark.parametrize("needle", [
    "--require-hashes -r requirements/ci.txt", "pip install --quiet --no-deps -e .", "-m deptry .",
])
def test_ci_installs_from_the_lock_and_checks_the_dependencies(needle: str) -> None:
    assert needle in (ROOT / ".ci" / "run").read_text()


def test_readme_says_why_for_each_runtime_dependency_and_no_other() -> None:
    section = (ROOT / "README.md").read_text().split("\n## Dependencies\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.M)
    assert all(len(why.split()) >= 4 for _, why in rows), rows
    listed = {canonicalize_name(Requirement(name).name) for name, _ in rows}
    assert listed == {canonicalize_name(r.name) for r in RUNTIME}

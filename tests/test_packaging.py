"""The lock: pyproject.toml keeps ranges, constraints.txt the exact versions `make` installs (and CI tests)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        found += [Requirement(r) for r in extra if canonicalize_name(Requirement(r).name) != "deeptrain"]
    return found


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = pinned
    return pins


REQUIREMENTS = _requirements()


def test_every_dependency_is_a_range_not_a_pin():
    """A library that pins exact versions over-constrains its users: exact versions belong in the lock."""
    pinned = [str(r) for r in REQUIREMENTS if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins in pyproject.toml (move them to constraints.txt): {pinned}"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_the_lock_pins_every_dependency_inside_its_range(req):
    pins = _pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not in constraints.txt: run `make lock`"
    assert req.specifier.contains(pins[name], prereleases=True), \
        f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}: run `make lock`"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_this_environment_runs_the_locked_versions(req):
    """`make` installs with `-c constraints.txt`: the suite tests exactly what the lock names."""
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: run `make venv`")
    assert installed == _pins()[canonicalize_name(req.name)], f"{req.name} {installed} is not the locked version"

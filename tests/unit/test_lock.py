"""Installs are reproducible (issue 19, defect 12): what runs is exactly what is locked.

``make`` installs ``requirements-dev.lock`` (hashes checked), CI adds
``requirements-libvirt.lock``, the Containerfile installs ``requirements.lock``; ``make lock``
refreshes them. ``pyproject.toml`` keeps ranges for those who install the package as a library.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)
TOOLING = {"pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {canonical(name): version for name, version in PIN.findall(text)}


def installed() -> dict[str, str]:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonical(name): version for name, version in PIN.findall(frozen)}


def test_this_environment_holds_exactly_the_locked_versions() -> None:
    """``pip freeze`` equals requirements-dev.lock: every locked package at its locked
    version, and nothing else (but pip itself, and the libvirt extra at its own lock's pin)."""
    locked = pins("requirements-dev.lock")
    extra = pins("requirements-libvirt.lock")
    found = {name: v for name, v in installed().items() if name not in TOOLING}
    for name, version in extra.items():
        if name in found:
            assert found.pop(name) == version, name
    assert found == locked


def test_every_lock_line_carries_a_hash_and_no_machine_specific_index() -> None:
    """pip installs a lock only with ``--require-hashes`` when every pin has one; a lock
    names no index or wheel directory of the machine it was made on."""
    for lock in ("requirements.lock", "requirements-dev.lock", "requirements-libvirt.lock"):
        text = (ROOT / lock).read_text()
        starts = [match.start() for match in PIN.finditer(text)]
        entries = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
        assert entries
        assert all("--hash=sha256:" in entry for entry in entries), lock
        assert "--index-url" not in text
        assert "--find-links" not in text


def test_the_runtime_lock_agrees_with_the_dev_lock_and_covers_every_dependency() -> None:
    """Each package of requirements.lock is pinned alike in requirements-dev.lock, and every
    dependency pyproject.toml names (with its ranges) is in the locks."""
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    wanted = {canonical(re.split(r"[<>=\[ ;]", spec, maxsplit=1)[0]) for spec in names}
    assert wanted <= set(dev)
    assert {
        canonical(re.split(r"[<>=\[ ;]", s, maxsplit=1)[0]) for s in project["dependencies"]
    } <= set(runtime)


def test_make_ci_and_the_containerfile_install_from_the_locks() -> None:
    """The three ways cloudstate gets installed all read a lock, with hashes required."""
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements-dev.lock" in makefile
    assert "lock:" in makefile
    assert "--require-hashes" in (ROOT / ".ci" / "run").read_text()
    assert "requirements-libvirt.lock" in (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes -r /src/requirements.lock" in (ROOT / "Containerfile").read_text()

"""What ``python -m build`` ships is complete and runs on its own.

The build makes the sdist, then the wheel *from the unpacked sdist* (``build``'s default), so a
file the sdist forgot is missing from the wheel too and the run below fails: that is the proof
the sdist is complete. The wheel is then installed with its dependencies into a new, empty
virtual environment (no ``--system-site-packages``, nothing from this checkout on its path), and
the installed ``cloudstate`` is run as an operator would: ``--version``, then ``serve`` on a
fresh home, which must apply the packaged migrations and launch an instance on the simulator.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tomllib
import uuid
import venv
import zipfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloudstate.testing import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What a checkout holds but a build must never see: caches, environments, earlier builds.
NOT_SOURCE = (".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", "*.pyc", ".*_cache")
NOT_SOURCE += (".hypothesis", "test-artifacts")
MIGRATIONS = Path("src", "cloudstate", "store", "migrations")


@dataclass(frozen=True)
class Dist:
    """What was built, and the copy of the checkout it was built from (the reference:
    the checkout itself may change while the tests run)."""

    source: Path
    sdist: Path
    wheel: Path
    version: str


@dataclass(frozen=True)
class Installed:
    """A virtual environment holding the wheel; ``bin`` is its scripts directory."""

    bin: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "cloudstate"), *args],
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment less anything that could lead a process back to this checkout."""
    leaks = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTATE_")}
    return {**{k: v for k, v in env.items() if k not in leaks}, **extra}


def _package_files(source: Path) -> set[str]:
    """Every file of the package in ``source``, relative to its ``src``."""
    return {
        path.relative_to(source / "src").as_posix()
        for path in (source / "src" / "cloudstate").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def _head_revision(source: Path) -> str:
    """The newest migration in ``source``: the revision no other one revises."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (source / MIGRATIONS / "versions").glob("*.py"):
        text = script.read_text()
        revisions.update(re.findall(r'^revision = "(\w+)"', text, re.M))
        parents.update(re.findall(r'^down_revision = "(\w+)"', text, re.M))
    (head,) = revisions - parents
    return head


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist, and the wheel built from it, of a copy of this checkout."""
    source = tmp_path_factory.mktemp("source") / "cloudstate"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    version = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(source, sdist, wheel, version)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel and its dependencies in a new virtual environment of their own."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=True, clear=True)
    done = subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", str(dist.wheel)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Installed(where / "bin")


def test_the_sdist_holds_every_package_file_and_the_project_files(dist: Dist) -> None:
    """The sdist carries the whole package (migrations, ``py.typed``, static files) and what
    a build from it needs: ``pyproject.toml``, the README it names, ``PKG-INFO``."""
    prefix = f"cloudstate-{dist.version}/"
    with tarfile.open(dist.sdist) as archive:
        names = {name.removeprefix(prefix) for name in archive.getnames()}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
    missing = {f"src/{name}" for name in _package_files(dist.source)} - names
    assert not missing, f"not in the sdist: {sorted(missing)}"


def test_the_wheel_holds_every_package_file_the_migrations_and_the_script(dist: Dist) -> None:
    """The wheel, built from the sdist, holds every package file, among them the Alembic
    environment, template and each revision, and ``py.typed``; it declares the ``cloudstate``
    console script and the version in ``pyproject.toml``."""
    with zipfile.ZipFile(dist.wheel) as archive:
        names = set(archive.namelist())
        info = f"cloudstate-{dist.version}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    migrations = {
        "cloudstate/store/migrations/env.py",
        "cloudstate/store/migrations/script.py.mako",
        *(
            f"cloudstate/store/migrations/versions/{p.name}"
            for p in (dist.source / MIGRATIONS).glob("versions/*.py")
        ),
    }
    assert migrations | {"cloudstate/py.typed"} <= names
    missing = _package_files(dist.source) - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert re.search(
        r"^\[console_scripts\]\ncloudstate = cloudstate\.cli:main$", entry_points, re.M
    )
    assert f"\nVersion: {dist.version}\n" in metadata


def test_the_installed_command_reports_the_project_version(
    dist: Dist, installed: Installed
) -> None:
    """``cloudstate --version`` from the clean environment prints ``pyproject.toml``'s
    version, and the package it runs is the installed one, not this checkout."""
    done = installed.run("--version")
    assert done.returncode == 0, done.stdout + done.stderr
    assert dist.version in done.stdout.split(), done.stdout
    where = subprocess.run(
        [str(installed.bin / "python"), "-c", "import cloudstate; print(cloudstate.__file__)"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.bin.parent), where


@dataclass(frozen=True)
class Serving:
    url: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    def failure(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def serving(installed: Installed, tmp_path: Path) -> Iterator[Serving]:
    """``cloudstate serve`` from the clean environment on a home that does not exist yet."""
    home, log = tmp_path / "home", tmp_path / "serve.log"
    port = _free_port()
    env = _clean_env(
        CLOUDSTATE_HOME=str(home),
        CLOUDSTATE_PORT=str(port),
        CLOUDSTATE_SIMULATOR_FAST="true",
        CLOUDSTATE_RECONCILE_FAST_INTERVAL="0.2",
        CLOUDSTATE_LOG_FORMAT="json",
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(installed.bin / "cloudstate"), "serve", "--host", "127.0.0.1"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Serving(f"http://127.0.0.1:{port}", home, process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(serving: Serving) -> httpx.Response | None:
    assert serving.process.poll() is None, f"serve exited early:\n{serving.failure()}"
    try:
        response = httpx.get(f"{serving.url}/readyz", timeout=2)
    except httpx.TransportError:
        return None
    return response if response.status_code == 200 else None


def test_serve_from_the_wheel_migrates_a_fresh_home_launches_and_stops_on_sigterm(
    dist: Dist, serving: Serving
) -> None:
    """Installed ``cloudstate serve`` on a fresh home applies every packaged migration (the
    database is at this checkout's newest revision and ``/readyz`` says current), saves an
    admin token that ``POST /v1/orders`` accepts, launches an instance that reaches
    ``running`` on the simulator, and exits 0 on SIGTERM."""
    ready = wait_until(lambda: _ready(serving), timeout=60, interval=0.2, what="/readyz 200")
    assert ready.json()["migrations"] == "current"
    with closing(sqlite3.connect(serving.home / "cloudstate.db")) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (_head_revision(dist.source),)
        ]

    token = (serving.home / "token").read_text().strip()
    instance = str(uuid.uuid4())
    order = {
        "account": "simulator",
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": instance}],
    }
    with httpx.Client(base_url=serving.url, headers={"Authorization": f"Bearer {token}"}) as api:
        accepted = api.post("/v1/orders", json=order)
        assert accepted.status_code == 202, accepted.text
        wait_until(
            lambda: api.get(f"/v1/instances/{instance}").json()["state"] == "running",
            timeout=30,
            interval=0.1,
            what="the instance running",
        )

    serving.process.send_signal(signal.SIGTERM)
    code = serving.process.wait(timeout=20)  # what the systemd units allow
    assert code == 0, f"exit {code} after SIGTERM:\n{serving.failure()}"

"""The README is its own test: every ``cloudstate`` command of its console blocks runs, in
order, against a fresh ``cloudstate serve``, and its Python examples run.

A command is a ``$ `` line of a console block that runs ``cloudstate``. The ids a reader would
copy from earlier output (the README's sample UUIDs and provider ids) are replaced by the real
ones: each sample row is matched to the real output's row of the same instance name. A command
that follows forever (``watch``) runs in the background, as in the README's second terminal,
and is ended with Ctrl-C (SIGINT) after the others: it must exit 0 and have seen the launches.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server import Served, clean_env, cloudstate_command, serve

README = Path(__file__).resolve().parents[2] / "README.md"
IDS = re.compile(
    r"\b(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|i-[0-9a-f]{17})\b"
)
NAME = re.compile(r"\bweb-\d+\b")
FOLLOWING = ("watch",)


@dataclass
class Step:
    """One README command and the sample output printed under it."""

    argv: list[str]
    sample: list[str] = field(default_factory=list)


def readme_steps() -> list[Step]:
    steps: list[Step] = []
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(), flags=re.DOTALL)
    for block in blocks:
        current: Step | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                words = shlex.split(line[2:], comments=True)
                is_ours = bool(words) and Path(words[0]).name == "cloudstate"
                current = Step(words[1:]) if is_ours else None
                if current is not None:
                    steps.append(current)
            elif current is not None:
                current.sample.append(line)
    return steps


def learn(sample: list[str], output: str, ids: dict[str, str]) -> None:
    """Map each id of the sample rows to the id in the real row of the same instance name."""
    real_rows = {m[0]: line for line in output.splitlines() if (m := NAME.search(line))}
    for line in sample:
        name = NAME.search(line)
        real = real_rows.get(name[0]) if name else None
        if real is None:
            continue
        for sample_id, real_id in zip(IDS.findall(line), IDS.findall(real), strict=False):
            ids.setdefault(sample_id, real_id)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Served]:
    home = tmp_path / "home"
    home.mkdir()
    with serve(home) as served:
        yield served


def test_the_readme_steps_are_found() -> None:
    """The README still has its quickstart: a launch, an action, the simulator."""
    commands = [" ".join(step.argv) for step in readme_steps()]
    assert any(c.startswith("launch ") for c in commands)
    assert any(c.startswith("stop ") for c in commands)
    assert any(c.startswith("simulator stop") for c in commands)
    assert "watch" in commands


@pytest.mark.slow
def test_every_readme_command_runs_in_order_against_a_fresh_server(fresh: Served) -> None:
    """Each command exits 0, with the ids it names taken from the earlier commands' output;
    ``watch``, started first as in the README, ends on Ctrl-C with exit 0 having seen the
    instances created."""
    env = {
        **clean_env(),
        "CLOUDSTATE_HOME": str(fresh.home),  # the token file, as on the README's machine
        "CLOUDSTATE_PORT": str(fresh.port),
        "COLUMNS": "160",
    }
    ids: dict[str, str] = {}
    followers: list[subprocess.Popen[str]] = []
    try:
        for step in readme_steps():
            argv = [ids.get(word, word) for word in step.argv]
            unknown = [word for word in argv if IDS.fullmatch(word)]
            assert not [w for w in unknown if w not in ids.values()], (argv, ids)
            if argv[0] in FOLLOWING:
                followers.append(_background(argv, env))
                continue
            done = subprocess.run(
                [*cloudstate_command(), *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (argv, done.stdout, done.stderr)
            learn(step.sample, done.stdout, ids)
    finally:
        outputs = [_interrupt(process) for process in followers]
    assert all(code == 0 for code, _ in outputs), outputs
    assert all("instance.created" in text for _, text in outputs), outputs


def _background(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*cloudstate_command(), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    assert "following events" in process.stderr.readline()  # it is listening: go on
    return process


def _interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return process.returncode, out


def python_blocks(section: str) -> list[str]:
    text = README.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_embedded_example_runs() -> None:
    """The ```python blocks of the README's "Embedded use" section execute without error (their
    asserts included)."""
    blocks = python_blocks("Embedded use")
    assert blocks, "the README lost its example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


@pytest.mark.slow
def test_the_readme_client_example_runs_against_a_fresh_server(
    fresh: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "Python client" example runs as written (the server found through the home's
    token file and CLOUDSTATE_PORT), and ends."""
    for name in [n for n in os.environ if n.startswith("CLOUDSTATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLOUDSTATE_HOME", str(fresh.home))
    monkeypatch.setenv("CLOUDSTATE_PORT", str(fresh.port))
    (block,) = python_blocks("Python client")
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})

"""The command line as a newcomer meets it (issue 19): global options anywhere, the simulator
through the API, messages in the CLI's own words, and exit codes that mean one thing each.

Every test runs the real ``cloudstate`` command against a real ``cloudstate serve``; the
simulator commands run with an empty ``CLOUDSTATE_HOME``, so they cannot read the server's
files: whatever they do goes through the API.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from server import Served, cloudstate_command, shared_server
from test_cli import launched, run
from typer.testing import CliRunner

from cloudstate.cli import app
from cloudstate.cli.connect import EXIT_CODE_MEANINGS, ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from shared_server(tmp_path_factory)


@pytest.fixture
def tag() -> str:
    return f"test={uuid.uuid4().hex[:12]}"


@pytest.fixture
def elsewhere(server: Served, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment on "another host": the server's URL and token, an empty home."""
    empty = tmp_path / "empty-home"
    empty.mkdir()
    return server.env(CLOUDSTATE_HOME=str(empty))


def sim(server: Served, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(server, "simulator", *args, env=env)


def held(server: Served, env: dict[str, str], tag: str) -> list[dict[str, Any]]:
    """What the simulated cloud holds with the label ``tag`` (``simulator ls --json``)."""
    listed = sim(server, env, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    key, value = tag.split("=")
    return [item for item in json.loads(listed.stdout) if item["labels"].get(key) == value]


def test_simulator_ls_shows_a_header_with_provider_ids_beside_names(
    server: Served, elsewhere: dict[str, str], tag: str
) -> None:
    """``simulator ls`` (through the API, no home) has a header, and each row shows the
    cloud's id beside the instance's name and cloudstate's UUID: something to match by."""
    uuids = launched(server, tag, 1)
    mine = held(server, elsewhere, tag)
    assert [item["uuid"] for item in mine] == uuids
    table = sim(server, elsewhere, "ls")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header[:4] == ["PROVIDER", "ID", "NAME", "STATE"]
    row = next(line for line in table.stdout.splitlines() if mine[0]["provider_id"] in line)
    assert uuids[0] in row
    assert "running" in row


def test_simulator_stop_by_label_stops_many_in_one_command_and_says_what_it_did(
    server: Served, elsewhere: dict[str, str], tag: str
) -> None:
    """``simulator stop --label k=v`` stops every running instance with that label, in one
    request, and prints a row per instance: done, and the raw state now."""
    launched(server, tag, 3)
    stopped = sim(server, elsewhere, "stop", "--label", tag)
    assert stopped.returncode == 0, stopped.stderr
    rows = [line for line in stopped.stdout.splitlines() if line.startswith("i-")]
    assert len(rows) == 3
    assert all(" done " in row and "stopping" in row for row in rows)
    assert {item["state"] for item in held(server, elsewhere, tag)} <= {"stopping", "stopped"}


def test_simulator_commands_take_many_ids_and_json_and_refuse_unknown_ids_with_exit_4(
    server: Served, elsewhere: dict[str, str], tag: str
) -> None:
    """``simulator terminate ID ID --json`` terminates both in one request; an unknown id in
    the same call is refused with its reason (exit 4), the others are still done."""
    launched(server, tag, 2)
    ids = [item["provider_id"] for item in held(server, elsewhere, tag)]
    done = sim(server, elsewhere, "terminate", *ids, "i-doesnotexist", "--json")
    assert done.returncode == ExitCode.REFUSED
    answer = json.loads(done.stdout)
    assert (answer["done"], answer["refused"]) == (2, 1)
    refused = next(r for r in answer["results"] if not r["ok"])
    assert refused["provider_id"] == "i-doesnotexist"
    assert "no simulator account holds" in refused["error"]


def test_simulator_stop_without_ids_or_filters_is_refused_before_anything_is_sent(
    server: Served, elsewhere: dict[str, str]
) -> None:
    """``simulator stop`` alone would be ambiguous: exit 1 naming what to give."""
    done = sim(server, elsewhere, "stop")
    assert done.returncode == ExitCode.ERROR
    assert "--all" in done.stderr
    assert "--label" in done.stderr


def test_simulator_configure_and_realm_reach_the_servers_cloud(
    server: Served, elsewhere: dict[str, str]
) -> None:
    """``simulator configure`` without knobs prints them (JSON), with knobs changes them on
    the server's cloud; ``simulator realm sim-b false`` takes a realm down and back up."""
    shown = sim(server, elsewhere, "configure")
    assert shown.returncode == 0, shown.stderr
    before = json.loads(shown.stdout)["page_size"]
    changed = sim(server, elsewhere, "configure", f"page_size={before}")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["page_size"] == before
    bad = sim(server, elsewhere, "configure", "no_such_knob=1")
    assert bad.returncode == ExitCode.ERROR
    assert "no_such_knob" in bad.stderr
    down = sim(server, elsewhere, "realm", "sim-b", "false", "--reason", "test")
    assert down.returncode == 0, down.stderr
    up = sim(server, elsewhere, "realm", "sim-b", "true")
    assert up.returncode == 0, up.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_url_token_and_json_are_accepted_before_or_after_the_subcommand(
    server: Served, elsewhere: dict[str, str], where: str
) -> None:
    """``--url``, ``--token`` and ``--json`` work on either side of the subcommand: a bad
    ``--token`` is refused by the server (exit 5) rather than by the parser (exit 2), and a
    good one with ``--json`` prints JSON, for ``ls`` and a ``simulator`` command alike."""
    env = {k: v for k, v in elsewhere.items() if k not in ("CLOUDSTATE_URL", "CLOUDSTATE_TOKEN")}

    def line(command: list[str], token: str) -> list[str]:
        given = ["--url", server.url, f"--token={token}", "--json"]
        return [*given, *command] if where == "before" else [*command, *given]

    for command in (["ls"], ["simulator", "ls"]):
        refused = run(server, *line(command, "bad-token"), env=env)
        assert refused.returncode == ExitCode.UNREACHABLE, refused.stderr
        answered = run(server, *line(command, server.token), env=env)
        assert answered.returncode == 0, answered.stderr
        json.loads(answered.stdout)


def test_launch_errors_name_the_flags_and_clamped_overrides_are_reported(
    server: Served, tag: str
) -> None:
    """A launch without ``--image`` is refused naming ``--image`` (not ``instances.0.image``),
    once; ``--profile medium --memory 99999`` launches, and says it was granted 8192 MiB."""
    missing = run(server, "launch", "--count", "2", "--profile", "small")
    assert missing.returncode == ExitCode.ERROR
    assert "error: --image: required" in missing.stderr
    assert "instances." not in missing.stderr
    assert missing.stderr.count("--image") == 1
    clamped = run(
        server, "launch", "-n", "1", "--image", "img-web", "--profile", "medium",
        "--memory", "99999", "--label", tag,
    )  # fmt: skip
    assert clamped.returncode == 0, clamped.stderr
    assert "--memory 99999: granted 8192 MiB (profile medium)" in clamped.stderr


def test_subscription_add_for_loopback_says_the_allow_list_is_the_servers(
    server: Served,
) -> None:
    """A loopback webhook is refused (exit 1) with where the allow-list goes: the server's
    environment, not the CLI's."""
    refused = run(server, "subscription", "add", "http://127.0.0.1:9/hook")
    assert refused.returncode == ExitCode.ERROR
    text = " ".join(refused.stderr.split())
    assert "CLOUDSTATE_WEBHOOK_ALLOW in the environment of the cloudstate server" in text


def test_events_for_an_unknown_instance_is_not_found_like_show(server: Served) -> None:
    """``events --instance <unknown uuid>`` says not found with exit 1, as ``show`` does,
    instead of an empty table with exit 0."""
    unknown = str(uuid.uuid4())
    for command in (["events", "--instance", unknown], ["show", unknown]):
        done = run(server, *command)
        assert done.returncode == ExitCode.ERROR, command
        assert f"instance {unknown} not found" in done.stderr


def test_a_usage_error_and_a_timeout_have_different_exit_codes(server: Served, tag: str) -> None:
    """A wrong command line exits 2 (click's usage error); a wait that times out exits 6:
    a script can tell "I called it wrong" from "it is still going"."""
    assert run(server, "ls", "--no-such-option").returncode == ExitCode.USAGE == 2
    slow = run(
        server, "launch", "-n", "1", "--image", "img-web", "--profile", "small",
        "--label", tag, "--timeout", "0",
    )  # fmt: skip
    assert slow.returncode == ExitCode.TIMEOUT == 6, slow.stderr
    assert "it goes on" in slow.stderr


def test_the_exit_code_table_in_the_readme_is_the_clis() -> None:
    """The README's exit-code table lists exactly the CLI's codes, with the same meanings as
    ``cloudstate --help``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `") and "` | " in line]
    table = {int(row.split("`")[1]): row.split("|")[2].strip() for row in rows if row[3].isdigit()}
    assert table == {int(code): meaning for code, meaning in EXIT_CODE_MEANINGS.items()}
    helped = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    text = " ".join(helped.output.split())
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code)} {meaning}" in text


def test_watch_says_at_once_that_it_is_following(server: Served) -> None:
    """``watch`` prints where it follows from on stderr before any event arrives."""
    watcher = subprocess.Popen(
        [*cloudstate_command(), "watch", "--timeout", "30"],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stderr is not None
        first = watcher.stderr.readline()
        assert first.startswith("following events after #")
        assert "Ctrl-C stops" in first
    finally:
        watcher.kill()
        watcher.communicate()


def test_every_help_reads_cleanly() -> None:
    """No ``<bool>``/``<str>`` type tags and no reStructuredText ``double backquotes`` in the
    help of the root or of any command."""
    runner = CliRunner()

    def commands(prefix: list[str]) -> list[list[str]]:
        done = runner.invoke(app, [*prefix, "--help"], env={"COLUMNS": "120"})
        assert done.exit_code == 0, (prefix, done.output)
        assert not re.search(r"<[a-z][\w\[\] ]*>", done.output), (prefix, done.output)
        assert "``" not in done.output, (prefix, done.output)
        listed = done.output.split("Commands", 1)[1] if "Commands" in done.output else ""
        names = [m[1] for line in listed.splitlines() if (m := re.match(r"│ (\w[\w-]*) ", line))]
        found = [prefix]
        for name in names:
            found += commands([*prefix, name])
        return found

    assert len(commands([])) > 30


def test_the_readme_python_client_example_runs_twice_and_ends(
    server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's client example runs as written against a live server, twice in a row
    (fresh UUIDs, no AlreadyExistsError), and each run ends (it breaks out of the stream)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python client", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    monkeypatch.setenv("CLOUDSTATE_URL", server.url)
    monkeypatch.setenv("CLOUDSTATE_TOKEN", server.token)
    for _ in range(2):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})

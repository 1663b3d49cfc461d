"""The real ``cloudstate`` command against a live ``cloudstate serve`` (both subprocesses).

The CLI finds the server through ``CLOUDSTATE_URL`` and ``CLOUDSTATE_TOKEN`` (one test uses
the token file in the home instead). Tests assert exit codes first: they are the contract
scripts rely on (0 ok, 1 error, 2 timeout, 3 launch failed, 4 refused, 5 unreachable/auth).
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from server import Served, clean_env, cloudstate_command, free_port, shared_server
from typer.testing import CliRunner

from cloudstate.cli import app
from cloudstate.client import AuthenticationError, Client
from cloudstate.testing import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from shared_server(tmp_path_factory)


@pytest.fixture
def tag() -> str:
    return f"test={uuid.uuid4().hex[:12]}"


def run(
    server: Served, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cloudstate_command(), *args],
        env=env or server.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_together(server: Served, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once (each CLI start costs a second or so of imports)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: run(server, *args), commands))


def launched(server: Served, tag: str, count: int) -> list[str]:
    """Set-up, not under test: ``count`` running instances (through the client, quicker)."""
    key, value = tag.split("=")
    with Client(server.url, server.token) as api:
        order = api.launch(
            account="simulator",
            image="img-web",
            hardware_profile="small",
            labels={key: value},
            instances=[{"uuid": str(uuid.uuid4())} for _ in range(count)],
        )
        uuids = [i.uuid for i in order.instances]
        wait_until(
            lambda: all(api.get(u).state == "running" for u in uuids),
            timeout=20,
            interval=0.1,
            what="instances running",
        )
    return [str(u) for u in uuids]


def simulated_account(server: Served, home: Path, **knobs: Any) -> str:
    """Set-up: a simulator account on a cloud of its own (a file in ``home``) with ``knobs``,
    so slowing it down or filling it up touches no other account."""
    name = f"sim-{uuid.uuid4().hex[:8]}"
    config = {"path": str(home / f"{name}.db"), "fast": True, **knobs}
    with Client(server.url, server.token) as api:
        api.add_account(name, "simulator", config=config)
    return name


def test_launch_waits_with_a_progress_bar_then_prints_the_instances(
    server: Served, tag: str
) -> None:
    """``launch -n 3`` waits, showing the order's progress on stderr, until the order has
    ended ``running``: exit 0, a table of three running instances and the order's final state
    on stdout."""
    launch = shlex.split("launch -n 3 --image img-web --profile small --name-prefix web")
    done = run(server, *launch, "--label", tag)
    assert done.returncode == 0, done.stderr
    assert "launching" in done.stderr
    assert "3/3" in done.stderr
    assert "order running: 3 running" in done.stderr
    rows = [line for line in done.stdout.splitlines() if " web-" in line]
    assert len(rows) == 3
    assert all("running" in row and "simulator" in row for row in rows)
    assert re.search(r"order [0-9a-f-]{36}: running; 3 running", done.stdout)


def test_an_all_or_nothing_launch_with_a_failure_ends_rolled_back_and_exits_3(
    server: Served, tag: str, tmp_path: Path
) -> None:
    """``launch`` of an ``all_or_nothing`` order where one instance asks for an image the cloud
    does not have waits past the failure, through the rollback, until the order has ended:
    every instance terminated, the final state ``rolled_back`` and its reason printed, exit 3."""
    key, value = tag.split("=")
    order = tmp_path / "order.yaml"
    order.write_text(
        "image: img-web\nhardware_profile: small\npolicy: all_or_nothing\n"
        f"labels: {{{key}: '{value}'}}\ninstances:\n"
        f"  - uuid: {uuid.uuid4()}\n  - uuid: {uuid.uuid4()}\n"
        f"  - uuid: {uuid.uuid4()}\n    image: img-none\n"
    )
    done = run(server, "launch", "-f", str(order))
    assert done.returncode == 3, done.stderr
    final = re.search(r"order [0-9a-f-]{36}: rolled_back \((.+)\); 3 terminated", done.stdout)
    assert final, done.stdout
    assert "failed" in final.group(1)
    assert "order rolled_back" in done.stderr
    assert "3 of 3 not running" in done.stderr


def test_ls_json_is_the_api_page(server: Served, tag: str) -> None:
    """``ls --json`` prints the API's page ({items, next_cursor}); filters narrow it."""
    uuids = launched(server, tag, 2)
    done, walked = run_together(
        server,
        ["ls", "--label", tag, "--state", "running", "--json"],
        ["ls", "--label", tag, "--limit", "1", "--all", "--json"],
    )
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert sorted(item["uuid"] for item in page["items"]) == sorted(uuids)
    assert page["next_cursor"] is None
    assert len(json.loads(walked.stdout)["items"]) == 2


def test_stop_with_wait_then_a_refused_stop_exits_4(server: Served, tag: str) -> None:
    """``stop UUID --wait`` returns once it is stopped (exit 0); stopping it again is refused
    by the state machine: exit 4, with the allowed actions in the reason."""
    [target] = launched(server, tag, 1)
    stopped = run(server, "stop", target, "--wait")
    assert stopped.returncode == 0, stopped.stderr
    assert "accepted" in stopped.stdout
    assert "stopped" in stopped.stdout
    again = run(server, "stop", target)
    assert again.returncode == 4
    assert "allowed actions: start, destroy" in again.stdout
    assert "refused" in again.stderr


def test_a_bulk_action_with_one_refusal_exits_4_and_reports_each(server: Served, tag: str) -> None:
    """Several UUIDs go through the bulk endpoint: the running one reboots, the unknown one is
    refused; exit 4, and ``--json`` is the bulk answer."""
    [target] = launched(server, tag, 1)
    nobody = str(uuid.uuid4())
    done = run(server, "reboot", target, nobody, "--json")
    assert done.returncode == 4
    answer: dict[str, Any] = json.loads(done.stdout)
    assert (answer["accepted"], answer["refused"]) == (1, 1)
    assert {r["uuid"]: r["accepted"] for r in answer["results"]} == {target: True, nobody: False}


def test_show_and_events_json(server: Served, tag: str) -> None:
    """``show UUID --events --json`` gives the instance and its timeline; ``events --json``
    gives the API's event page, filtered to that instance."""
    [target] = launched(server, tag, 1)
    showed, done = run_together(
        server,
        ["show", target, "--events", "--json"],
        ["events", "--instance", target, "--json"],
    )
    shown = json.loads(showed.stdout)
    assert shown["instance"]["state"] == "running"
    types = [event["type"] for event in shown["events"]]
    assert types[0] == "instance.created"
    assert "instance.state_changed" in types

    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert [e["seq"] for e in page["items"]] == [e["seq"] for e in shown["events"]]
    assert page["next_after"] == page["items"][-1]["seq"]


def test_tokens_create_list_revoke(server: Served) -> None:
    """``token create`` prints the plaintext once (stdout, alone); ``token list`` never shows
    it; a read token cannot administer (403: exit 5); ``token revoke`` makes it refused."""
    name = f"ci-{uuid.uuid4().hex[:8]}"
    created = run(server, "token", "create", name, "--scope", "read")
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip()
    assert plaintext.startswith("cst_")
    assert "shown once" in created.stderr

    listed, administer = run_together(
        server, ["token", "list", "--json"], ["--token", plaintext, "token", "list"]
    )
    tokens = {t["name"]: t for t in json.loads(listed.stdout)}
    assert tokens[name]["token"] is None
    assert plaintext not in listed.stdout
    assert administer.returncode == 5
    assert "lacks the admin scope" in administer.stderr

    assert run(server, "token", "revoke", name).returncode == 0
    with Client(server.url, plaintext) as revoked, pytest.raises(AuthenticationError):
        revoked.accounts()


def test_a_wrong_token_or_no_server_exits_5(server: Served) -> None:
    """A token the server does not know, or nothing listening at the URL: exit 5, one line."""
    wrong, nowhere = run_together(
        server,
        ["--token", "cst_wrong", "ls"],
        ["--url", f"http://127.0.0.1:{free_port()}", "ls"],
    )
    assert wrong.returncode == 5
    assert "unknown or revoked" in wrong.stderr
    assert nowhere.returncode == 5
    assert "cannot reach cloudstate" in nowhere.stderr


def test_the_token_file_in_the_home_is_enough(server: Served) -> None:
    """With only CLOUDSTATE_HOME and the port set, the CLI reads the token ``serve`` saved."""
    env = {
        **clean_env(),
        "CLOUDSTATE_HOME": str(server.home),
        "CLOUDSTATE_PORT": str(server.port),
    }
    done = run(server, "account", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert "simulator" in {a["name"] for a in json.loads(done.stdout)}


def test_a_failed_launch_exits_3_and_bad_input_exits_1(server: Served, tag: str) -> None:
    """An image the cloud does not have: the instance ends in ``error``, exit 3. An order
    missing its image is refused before launch: exit 1, naming the flag."""
    failed, invalid = run_together(
        server,
        ["launch", "--image", "img-none", "--profile", "small", "--label", tag],
        ["launch", "--profile", "small"],
    )
    assert failed.returncode == 3
    assert "error" in failed.stdout
    assert "not running" in failed.stderr
    assert invalid.returncode == 1
    assert "--image: required" in invalid.stderr


def test_launch_from_an_order_file_without_waiting(
    server: Served, tag: str, tmp_path: Path
) -> None:
    """``launch -f order.yaml --no-wait`` submits the file's order and returns at once with
    the accepted order (JSON); flags override the file's fields."""
    key, value = tag.split("=")
    wanted = [str(uuid.uuid4()), str(uuid.uuid4())]
    order = tmp_path / "order.yaml"
    order.write_text(
        "image: img-basic\nhardware_profile: small\n"
        f"labels: {{{key}: '{value}'}}\ninstances:\n"
        + "".join(f"  - uuid: {u}\n    name: file-{n}\n" for n, u in enumerate(wanted))
    )
    done = run(server, "launch", "-f", str(order), "--image", "img-web", "--no-wait", "--json")
    assert done.returncode == 0, done.stderr
    accepted = json.loads(done.stdout)
    assert [i["uuid"] for i in accepted["instances"]] == wanted
    assert {i["image"] for i in accepted["instances"]} == {"img-web"}
    assert {i["name"] for i in accepted["instances"]} == {"file-0", "file-1"}


@pytest.mark.timeout(60)
def test_watch_prints_a_line_per_change_and_ctrl_c_exits_0(server: Served, tag: str) -> None:
    """``watch`` follows the stream from now: launching shows the instance's changes as lines
    (created, → running); SIGINT (Ctrl-C) ends it with exit 0."""
    seen = _now_reads(server)
    watcher = subprocess.Popen(
        [*cloudstate_command(), "watch", "--label", tag],
        env={**server.env(), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Client(server.url, server.token) as api:
            wait_until(lambda: _now_reads(server) > seen, timeout=10, interval=0.05)
            key, value = tag.split("=")
            api.launch(
                account="simulator",
                image="img-web",
                hardware_profile="small",
                labels={key: value},
                instances=[{"uuid": str(uuid.uuid4()), "name": "watched"}],
            )
            lines: list[str] = []
            assert watcher.stdout is not None
            for line in watcher.stdout:
                lines.append(line)
                if "→ running" in line:
                    break
        watcher.send_signal(signal.SIGINT)
        try:
            code = watcher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watcher.send_signal(signal.SIGABRT)  # faulthandler: where is it stuck?
            _, stderr = watcher.communicate(timeout=10)
            pytest.fail(f"watch did not end on SIGINT; its threads:\n{stderr}")
        assert code == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        for pipe in (watcher.stdout, watcher.stderr):
            if pipe is not None:
                pipe.close()
    assert "instance.created" in lines[0]
    assert "watched" in lines[0]
    assert "new → pending" in "".join(lines)


def _now_reads(server: Served) -> int:
    """How often an event page was answered (the server logs each request once answered).
    ``watch`` reads "now" (the newest seq) from one: once it has, every later event is after
    its cursor."""
    return (server.home / "serve.log").read_text().count("GET /v1/events ")


def test_account_add_and_rm(server: Served) -> None:
    """``account add`` creates a simulator account with its config (JSON values parsed);
    ``account verify`` checks its credentials; ``account rm`` removes it (``account list`` is
    exercised by the token-file test)."""
    name = f"sim-{uuid.uuid4().hex[:8]}"
    added = run(
        server, "account", "add", name, "--provider", "simulator", "--config", "fast=true", "--json"
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["config"] == {"fast": True}
    with Client(server.url, server.token) as api:
        assert name in {account.name for account in api.accounts()}
        verified = run(server, "account", "verify", name, "--json")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout) == {"ok": True}
        assert run(server, "account", "rm", name).returncode == 0
        assert name not in {account.name for account in api.accounts()}


def test_the_root_help_lists_the_exit_codes() -> None:
    """``cloudstate --help`` documents the exit codes scripts can rely on (in process: this
    needs no server)."""
    done = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"})
    assert done.exit_code == 0
    text = " ".join(done.output.split())
    for phrase in (
        "0 ok",
        "1 error",
        "2 usage",
        "3 a launch",
        "4 an action",
        "5 cannot",
        "6 timed",
    ):
        assert phrase in text


def finished_order(server: Served, tag: str, **fields: Any) -> str:
    """Set-up: an order of two on the simulator (or as ``fields`` say), once it has finished."""
    key, value = tag.split("=")
    order = {"account": "simulator", "image": "img-web", "hardware_profile": "small", **fields}
    with Client(server.url, server.token) as api:
        accepted = api.launch(
            order, labels={key: value}, instances=[{"uuid": str(uuid.uuid4())} for _ in range(2)]
        )
        wait_until(
            lambda: api.get_order(accepted.id).finished_at is not None,
            timeout=20,
            interval=0.1,
            what="the order finished",
        )
    return str(accepted.id)


def test_orders_ls_and_show(server: Served, tag: str) -> None:
    """``orders ls --state running --json`` is the API's page of running orders (the new one
    first), ``--all`` walks every page; ``orders show --json`` is the order; ``orders show``
    prints its state, policy and counts, then its instances."""
    order_id = finished_order(server, tag)
    listed, walked, shown, table = run_together(
        server,
        ["orders", "ls", "--state", "running", "--limit", "5", "--json"],
        ["orders", "ls", "--all", "--limit", "2", "--json"],
        ["orders", "show", order_id, "--json"],
        ["orders", "show", order_id],
    )
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["items"][0]["id"] == order_id
    assert {item["state"] for item in page["items"]} == {"running"}
    every = json.loads(walked.stdout)
    assert every["next_cursor"] is None
    assert order_id in {item["id"] for item in every["items"]}
    assert json.loads(shown.stdout)["counts"] == {"running": 2}
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert re.search(r"state\s+running", text)
    assert re.search(r"policy\s+partial", text)
    assert re.search(r"instances\s+2 running", text)
    assert "launch attempts" not in text  # each instance was tried once
    for instance in json.loads(shown.stdout)["instances"]:
        assert instance["uuid"] in text
    plain = run(server, "orders", "ls", "--state", "running", "--limit", "1")
    assert plain.returncode == 0, plain.stderr
    assert order_id in plain.stdout
    assert "more: --cursor" in plain.stderr


def test_orders_show_lists_each_launch_attempt_after_a_failover(
    server: Served, tag: str, tmp_path: Path
) -> None:
    """An order whose first account has no capacity fails over to the next: ``orders show``
    lists both attempts of each instance (refused on the first account, launched on the
    second)."""
    full = simulated_account(server, tmp_path, capacity=0)
    order_id = finished_order(server, tag, account=None, accounts=[full, "simulator"])
    shown = run(server, "orders", "show", order_id)
    assert shown.returncode == 0, shown.stderr
    section = shown.stdout.split("launch attempts", 1)[1]
    rows = [line.split() for line in section.splitlines() if re.match(r"[0-9a-f-]{36} ", line)]
    assert [(row[2], row[3]) for row in rows] == [("1", full), ("2", "simulator")] * 2
    assert [row[6] == "launched" for row in rows] == [False, True] * 2
    assert "instance limit of 0" in section


def test_orders_cancel_with_wait_ends_cancelled_and_exits_0(
    server: Served, tag: str, tmp_path: Path
) -> None:
    """``orders cancel ID --wait`` on an order still launching (a slow cloud) waits until every
    instance is destroyed and the order is ``cancelled``: exit 0. Cancelling it again is a
    conflict naming its state: exit 1."""
    slow = simulated_account(server, tmp_path, boot_seconds=60.0)
    key, value = tag.split("=")
    with Client(server.url, server.token) as api:
        order = api.launch(
            account=slow,
            image="img-web",
            hardware_profile="small",
            labels={key: value},
            instances=[{"uuid": str(uuid.uuid4())} for _ in range(2)],
        )
        wait_until(
            lambda: api.get_order(order.id).state == "launching",
            timeout=15,
            interval=0.1,
            what="the order launching",
        )
    done = run(server, "orders", "cancel", str(order.id), "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert "cancelling" in done.stderr
    assert re.search(r"order [0-9a-f-]{36}: cancelled \(cancelled by request\)", done.stdout)
    assert done.stdout.count("terminated") >= 2
    again = run(server, "orders", "cancel", str(order.id), "--json")
    assert again.returncode == 1
    assert "is cancelled" in again.stderr


def test_workers_shows_the_servers_worker_alive(server: Served) -> None:
    """``cloudstate workers`` lists the worker processes with their heartbeat; the server's
    own engine is one, alive, holding what a heartbeat reported (JSON and table)."""

    def listed() -> list[dict[str, object]] | None:
        done = run(server, "workers", "--json")
        assert done.returncode == 0, done.stderr
        found: list[dict[str, object]] = json.loads(done.stdout)
        return found or None

    [worker] = wait_until(listed, timeout=15, what="a worker row")
    assert worker["alive"] is True
    table = run(server, "workers")
    assert table.returncode == 0, table.stderr
    assert "LAST HEARTBEAT" in table.stdout
    assert str(worker["pid"]) in table.stdout

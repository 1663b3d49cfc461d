"""A cloudstate cluster of real processes for the multi-process test, and the checks it runs.

``Cluster`` starts ``cloudstate api`` and ``cloudstate worker`` processes on one PostgreSQL
database, each with its own home and log file, as separate hosts would run them (they share
only the database, the secret key and the simulated cloud's file); ``close()`` kills whatever
is still running. The functions below turn what the test read afterwards (the lease log, the
simulator's ledger, the event log, the webhook receiver's log) into lists of violations, each
a sentence naming the instance or account, so a failed assertion says what went wrong.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import httpx
from server import clean_env, cloudstate_command, free_port
from sqlalchemy import create_engine, text

from cloudstate.client import Client
from cloudstate.client.models import Event, Instance
from cloudstate.providers.simulator import STATE_MAP, LedgerEntry
from cloudstate.testing import wait_until
from databases import psycopg_url

START_SECONDS = 30.0
STEADY = frozenset({"running", "stopped", "terminated"})
"""Simulator states an instance stays in until something is done to it."""


@dataclass(frozen=True)
class Cycle:
    """One reconcile lease of one account, from the lease log."""

    account: str
    worker: str
    started: float  # epoch seconds
    ended: float  # finished_at, or expires_at when the worker never released it
    finished: bool  # released (a crashed worker's lease just expires)
    completed: bool  # every page listed and applied, and the missing judged


def lease_log(url: str) -> list[Cycle]:
    """Every reconcile lease of the PostgreSQL database at ``url``, from its lease log."""
    engine = create_engine(psycopg_url(url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT a.name, l.worker_id, l.started_at, l.expires_at, l.finished_at,"
                    " l.completed FROM lease_log l JOIN accounts a ON a.id = l.account_id"
                )
            ).all()
    finally:
        engine.dispose()
    return [
        Cycle(name, worker, epoch(begun), epoch(finished or expires), finished is not None, done)
        for name, worker, begun, expires, finished, done in rows
    ]


@dataclass
class Cluster:
    """API and worker processes sharing ``database_url``; use as a context manager."""

    root: Path
    database_url: str
    settings: Mapping[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[Any] = field(default_factory=list)

    def env(self, name: str) -> dict[str, str]:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        return {
            **clean_env(),
            **self.settings,
            "CLOUDSTATE_HOME": str(home),
            "CLOUDSTATE_DATABASE_URL": self.database_url,
        }

    def log(self, name: str) -> Path:
        return self.root / name / "process.log"

    def run(self, *args: str) -> None:
        """A one-shot command (``db upgrade``), which must succeed."""
        done = subprocess.run(
            [*cloudstate_command(), *args],
            env=self.env("admin"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"cloudstate {' '.join(args)}: {done.stderr}"

    def start_api(self, name: str) -> str:
        """Start ``cloudstate api`` on a free port and return its URL once it is ready."""
        port = free_port()
        self._spawn(name, "api", "--host", "127.0.0.1", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: self._ready(name, url), START_SECONDS, interval=0.1, what=name)
        return url

    def start_worker(self, name: str) -> int:
        return self._spawn(name, "worker").pid

    def home(self, name: str) -> Path:
        return self.root / name

    def stop(self, names: Iterable[str]) -> None:
        """SIGTERM, as an operator would: the workers finish their tick and release leases."""
        chosen = [self.processes[name] for name in names]
        for process in chosen:
            process.send_signal(signal.SIGTERM)
        for process in chosen:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def exited(self) -> dict[str, int]:
        """Processes that ended on their own (they should not), with their exit status."""
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None and code not in (0, -signal.SIGTERM)
        }

    def tails(self, lines: int = 15) -> str:
        """The last lines of every process's log, for a failure message."""
        parts = []
        for name in self.processes:
            text = self.log(name).read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for handle in self._logs:
            handle.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        env = self.env(name)
        handle = self.log(name).open("wb")
        self._logs.append(handle)
        process = subprocess.Popen(
            [*cloudstate_command(), *command], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        return process

    def _ready(self, name: str, url: str) -> bool:
        if self.processes[name].poll() is not None:
            raise AssertionError(f"{name} exited: {self.log(name).read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        return False


# --- the invariants --------------------------------------------------------------------------


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def lease_overlaps(cycles: Sequence[Cycle]) -> list[str]:
    """Pairs of leases of one account held at the same time: each lease runs from its start to
    its release (or, never released, to its expiry), and the next may only start after."""
    found: list[str] = []
    by_account: dict[str, list[Cycle]] = defaultdict(list)
    for cycle in cycles:
        by_account[cycle.account].append(cycle)
    for account, leases in by_account.items():
        leases.sort(key=lambda c: c.started)
        holder = leases[0]
        for lease in leases[1:]:
            if lease.started < holder.ended:
                found.append(
                    f"{account}: {lease.worker} took it at {lease.started:.3f} while "
                    f"{holder.worker} held it until {holder.ended:.3f}"
                )
            if lease.ended > holder.ended:
                holder = lease
    return found


def duplicate_creates(creates: Mapping[UUID, int], launched: Iterable[UUID]) -> list[str]:
    """UUIDs the cloud did not create exactly once, and instances nobody asked for."""
    wanted = set(launched)
    found = [f"{u}: created {creates.get(u, 0)} times" for u in wanted if creates.get(u, 0) != 1]
    found += [f"{u}: created but never launched" for u in set(creates) - wanted]
    return sorted(found)


@dataclass(frozen=True)
class Stay:
    """One of our instances in one steady state in the cloud, as the ledger tells it."""

    entry: LedgerEntry  # the transition into the state
    until: float  # its next transition, or the next action requested of it (inf: neither)
    listed: bool  # a whole reconcile cycle of its account ran within the stay
    recorded: bool  # cloudstate held that state when the stay began, or recorded it later

    def __str__(self) -> str:
        entry = self.entry
        return (
            f"{entry.uuid}: the cloud was {entry.to_state} from {entry.at:.3f} to "
            f"{self.until:.3f} (ledger #{entry.seq}, cause {entry.cause}), "
            f"{'listed' if self.listed else 'never listed'} by a whole reconcile cycle, "
            f"{'recorded' if self.recorded else 'never recorded'} by cloudstate"
        )


def steady_stays(
    ledger: Sequence[LedgerEntry],
    events: Sequence[Event],
    cycles: Sequence[Cycle],
    account_of: Mapping[UUID, str],
) -> list[Stay]:
    """Every stay of our instances in a steady state (running, stopped, terminated).

    A stay runs from its ledger entry at ``t1`` to ``t2``, the first of the instance's next
    transition in the cloud and the next action requested of it in cloudstate (after a local
    change an older listing is rightly ignored). If a reconcile cycle of its account both
    started and finished within ``[t1, t2]``, that cycle listed the instance in that state and
    applied it, so ``listed`` implies ``recorded``: cloudstate has an ``instance.state_changed``
    event to that state at ``t1`` or later, or its last such event before ``t1`` already was
    to that state (the excursion in between was too short to be listed: a reboot seen only
    as ``running``). A shorter stay need not be recorded: a poller cannot see what no listing
    showed.
    """
    history = _history(events)
    requested = _requested(events)
    windows = _cycle_windows(cycles)
    stays = []
    for entry, left in _transitions(ledger):
        assert entry.uuid is not None
        if entry.to_state not in STEADY:
            continue
        until = min([left, *(at for at in requested[entry.uuid] if at > entry.at)])
        state = str(STATE_MAP[entry.to_state])
        stays.append(
            Stay(
                entry,
                until,
                listed=_listed_between(windows[account_of[entry.uuid]], entry.at, until),
                recorded=_held(history[entry.uuid], state, entry.at),
            )
        )
    return stays


def final_state_mismatches(ledger: Sequence[LedgerEntry], states: Mapping[UUID, str]) -> list[str]:
    """Instances whose last state in the cloud is not their state in cloudstate."""
    last: dict[UUID, str] = {}
    for entry in ledger:
        if entry.uuid is not None and entry.to_state is not None:
            last[entry.uuid] = str(STATE_MAP[entry.to_state])
    return sorted(
        f"{u}: cloud {last.get(u)}, cloudstate {state}"
        for u, state in states.items()
        if last.get(u) != state
    )


def delivery_gaps(
    events: Sequence[Event], received: Sequence[Mapping[str, Any]], instances: Iterable[UUID]
) -> list[str]:
    """Committed events that never arrived, and instances whose events arrived out of order.

    Every instance's arrivals must cover its committed per-instance sequence exactly (repeats
    allowed: at least once) and never go backwards; every other event must arrive by id.
    """
    arrived: dict[str, list[int]] = defaultdict(list)
    ids = set()
    for body in received:
        ids.add(body["id"])
        if body["data"].get("sequence") is not None:
            arrived[body["subject"]].append(body["data"]["sequence"])
    committed: dict[str, list[int]] = defaultdict(list)
    found = []
    for event in events:
        if event.instance_uuid is not None and event.instance_seq is not None:
            committed[str(event.instance_uuid)].append(event.instance_seq)
        elif str(event.id) not in ids:
            found.append(f"event #{event.seq} ({event.type}, {event.subject}) never arrived")
    for instance in map(str, instances):
        got, want = arrived.get(instance, []), sorted(committed.get(instance, []))
        if sorted(set(got)) != want:
            missing = sorted(set(want) - set(got))
            found.append(f"{instance}: committed {len(want)} events, never received {missing}")
        if got != sorted(got):
            found.append(f"{instance}: arrived out of order {got}")
    return found


def _history(events: Sequence[Event]) -> dict[UUID, list[tuple[float, str]]]:
    """Instance → (when, state) for each state cloudstate recorded it entering, in order."""
    history: dict[UUID, list[tuple[float, str]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.seq):
        if event.type == "instance.state_changed" and event.instance_uuid is not None:
            state = str(event.data["instance"]["state"])
            history[event.instance_uuid].append((epoch(event.time), state))
    return history


def _held(history: Sequence[tuple[float, str]], state: str, since: float) -> bool:
    """Did cloudstate hold ``state`` at ``since`` (its last change before was to it), or
    record entering it later? (10 ms of slack between the two processes' clock reads.)"""
    before = [held for at, held in history if at < since - 0.01]
    if before and before[-1] == state:
        return True
    return any(at >= since - 0.01 and held == state for at, held in history)


def _requested(events: Sequence[Event]) -> dict[UUID, list[float]]:
    """Instance → when an action was requested of it (a local change)."""
    requested: dict[UUID, list[float]] = defaultdict(list)
    for event in events:
        if event.type == "instance.action_requested" and event.instance_uuid is not None:
            requested[event.instance_uuid].append(epoch(event.time))
    return requested


def _transitions(ledger: Sequence[LedgerEntry]) -> list[tuple[LedgerEntry, float]]:
    """Each instance transition with the time the instance left that state (inf: never)."""
    stays: list[tuple[LedgerEntry, float]] = []
    current: dict[UUID, LedgerEntry] = {}
    for entry in sorted(ledger, key=lambda e: (e.at, e.seq)):
        if entry.uuid is None or entry.to_state is None:
            continue
        if entry.uuid in current:
            stays.append((current[entry.uuid], entry.at))
        current[entry.uuid] = entry
    stays += [(entry, float("inf")) for entry in current.values()]
    return stays


def _cycle_windows(cycles: Sequence[Cycle]) -> dict[str, list[tuple[float, float]]]:
    """When each account was listed whole: the cycles that completed (not those a failed
    listing, a lost lease or a kill cut short)."""
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for cycle in cycles:
        if cycle.completed:
            windows[cycle.account].append((cycle.started, cycle.ended))
    return windows


def _listed_between(windows: Sequence[tuple[float, float]], start: float, end: float) -> bool:
    return any(start <= begun and ended <= end for begun, ended in windows)


def unperformed_actions(
    ledger: Sequence[LedgerEntry], events: Sequence[Event]
) -> dict[str, list[str]]:
    """Actions cloudstate reported completed (``instance.action_completed``) although the cloud
    never carried them out (no ledger transition caused by the action since it was requested),
    by action."""
    done_by: dict[tuple[UUID, str], list[float]] = defaultdict(list)
    for entry in ledger:
        if entry.uuid is not None and entry.cause.startswith("action:"):
            done_by[(entry.uuid, entry.cause.removeprefix("action:"))].append(entry.at)
    requested: dict[UUID, float] = {}
    found: dict[str, list[str]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.seq):
        if event.instance_uuid is None:
            continue
        if event.type == "instance.action_requested":
            requested[event.instance_uuid] = epoch(event.time)
        elif event.type == "instance.action_completed":
            action = _ACTIONS[str(event.data["operation"])]
            since = requested.get(event.instance_uuid, 0.0)
            if not any(at >= since for at in done_by[(event.instance_uuid, action)]):
                found[action].append(
                    f"{event.instance_uuid}: {action} reported completed (event #{event.seq}) "
                    "but the cloud never did it"
                )
    return dict(found)


_ACTIONS = {"starting": "start", "stopping": "stop", "rebooting": "reboot", "destroying": "destroy"}


UNSETTLED = ("new", "pending", "stopping", "rebooting", "shutting_down", "unknown", "error")


def settled(api: Client, expected: Mapping[UUID, str], timeout: float) -> dict[UUID, Instance]:
    """Wait until each instance is in its expected state with nothing in flight, and return
    the fleet; on a timeout, say which are not and how they stand."""

    def wrong(fleet: Mapping[UUID, Instance]) -> list[UUID]:
        return [u for u, state in expected.items() if not _settled_as(fleet.get(u), state)]

    def check() -> dict[UUID, Instance] | None:
        if api.list(state=UNSETTLED, limit=1).items:
            return None
        fleet = {i.uuid: i for i in api.iter_instances(page_size=1000)}
        return None if wrong(fleet) else fleet

    try:
        return wait_until(check, timeout, interval=0.5, what=f"{len(expected)} settled")
    except AssertionError as exc:
        fleet = {i.uuid: i for i in api.iter_instances(page_size=1000)}
        stuck = [_describe(u, fleet.get(u), expected[u]) for u in wrong(fleet)]
        raise AssertionError(f"{exc}; {len(stuck)} not: {'; '.join(stuck[:10])}") from None


def _settled_as(instance: Instance | None, state: str) -> bool:
    return instance is not None and str(instance.state) == state and instance.operation is None


def _describe(instance_uuid: UUID, instance: Instance | None, wanted: str) -> str:
    if instance is None:
        return f"{instance_uuid}: not listed by the API, want {wanted}"
    return (
        f"{instance.uuid} {instance.state} (raw {instance.raw_state!r}, reason "
        f"{instance.state_reason!r}, operation {instance.operation}, error "
        f"{instance.last_error!r}, since {instance.state_changed_at:%H:%M:%S.%f}), want {wanted}"
    )

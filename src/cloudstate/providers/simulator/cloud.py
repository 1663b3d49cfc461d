"""``SimulatedCloud``: a realistic cloud kept in its own SQLite file.

Three faces:

* the **cloud API** the driver calls (``create_many``, ``list_page``, ``act``, ``list_*``), each
  in one namespace (an account), each counted, and each passing the gate of injected trouble
  (unreachable, token-bucket throttling, per-call failure rates) and latency;
* the **console** of someone else (``external_*``, ``set_realm_available``, ``configure``), for
  tests and the ``cloudstate simulator`` CLI: changes cloudstate did not make;
* the **record** of what really happened (``ledger``, ``creates_per_uuid``, ``call_counts``,
  ``instances``), so tests can compare it with what cloudstate reports.

State is shared by every process that opens the same file and survives restarts; time is
wall-clock (``time.time``) unless a ``clock`` is given, and passes lazily (see ``lifecycle``).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.states import Action
from cloudstate.exceptions import (
    ActionNotSupportedError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ValidationError,
)
from cloudstate.providers.base import Image, LaunchOutcome, LaunchSpec, Page, Realm
from cloudstate.providers.base import ProviderInstance as Instance
from cloudstate.providers.simulator import catalogue as cat
from cloudstate.providers.simulator.database import Database
from cloudstate.providers.simulator.knobs import SimulatorKnobs
from cloudstate.providers.simulator.launching import external_instance, launch
from cloudstate.providers.simulator.lifecycle import (
    LedgerEntry,
    Moment,
    advance,
    apply_action,
    ledger_entry,
    record,
    to_instance,
)

T = TypeVar("T")

_TOKEN_PREFIX = "sim1:"  # noqa: S105 (a page token, not a password)
_UNSEEDED = object()


class SimulatedCloud:
    """One simulated cloud. Safe to use from several threads and several processes at once."""

    def __init__(
        self,
        path: Path | str,
        *,
        initial: SimulatorKnobs | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the cloud at ``path``.

        ``initial`` knobs apply only when this call creates the cloud (``created`` is then
        True); an existing cloud keeps its own, which ``configure`` changes.
        """
        self.path = Path(path)
        self._clock = clock
        self._db = Database(self.path, initial or SimulatorKnobs())
        self.created: bool = self._db.created
        self._rng = random.Random()
        self._seeded_with: object = _UNSEEDED

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SimulatedCloud:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- the cloud API

    def create_many(self, namespace: str, specs: Sequence[LaunchSpec]) -> list[LaunchOutcome]:
        def operation(moment: Moment) -> list[LaunchOutcome]:
            outcomes = [launch(moment, namespace, spec) for spec in specs]
            _maybe_lose_response(moment, "create_many")
            return outcomes

        return self._call(namespace, "create_many", operation)

    def list_page(
        self,
        namespace: str,
        token: str | None = None,
        *,
        uuids: Sequence[uuid_module.UUID] | None = None,
    ) -> Page:
        """Our (tagged), visible instances in creation order, ``page_size`` at a time."""
        return self._call(
            namespace, "list_page", lambda m: _page(m, namespace, _parse_token(token), uuids)
        )

    def act(self, namespace: str, provider_id: str, action: Action | str) -> None:
        def operation(moment: Moment) -> None:
            chosen = _action(action)
            row = _find(moment, provider_id, namespace)
            apply_action(moment, row, chosen, f"action:{chosen}")
            _maybe_lose_response(moment, "act")

        self._call(namespace, "act", operation)

    def list_realms(self, namespace: str) -> list[Realm]:
        return self._call(namespace, "list_realms", _realms)

    def list_images(self, namespace: str) -> list[Image]:
        return self._call(namespace, "list_images", lambda _: list(cat.IMAGES))

    def list_hardware_profiles(self, namespace: str) -> list[HardwareProfile]:
        return self._call(namespace, "list_hardware_profiles", lambda _: list(cat.PROFILES))

    # ---------------------------------------------------------------- someone else's console

    def knobs(self) -> SimulatorKnobs:
        with self._moment() as moment:
            return moment.knobs

    def configure(self, **changes: Any) -> SimulatorKnobs:
        """Change knobs for every process sharing this cloud; returns the knobs now in force.

        Unknown names or bad values are a ``ValidationError`` and change nothing. Transitions
        already scheduled keep their times; changed throttling starts from full buckets.
        """
        with self._moment() as moment:
            knobs = moment.knobs.replace(**changes)
            moment.conn.execute("UPDATE meta SET value = ? WHERE key = 'knobs'", (knobs.to_json(),))
            if {"throttle_rate", "throttle_burst"} & set(changes):
                moment.conn.execute("DELETE FROM buckets")
            if "seed" in changes:
                self._seeded_with = _UNSEEDED
            detail = json.dumps(changes, sort_keys=True, default=str)
            record(moment, "configure", "external", detail=detail)
        return knobs

    def set_realm_available(self, name: str, available: bool, reason: str = "") -> None:
        """Make a realm (un)available for every namespace; launches there fail meanwhile."""
        with self._moment() as moment:
            row = moment.conn.execute("SELECT available FROM realms WHERE name = ?", (name,))
            found = row.fetchone()
            if found is None:
                raise ValidationError(
                    f"unknown realm {name!r}; realms: {', '.join(cat.REALMS)}", field="realm"
                )
            moment.conn.execute(
                "UPDATE realms SET available = ?, reason = ? WHERE name = ?",
                (int(available), "" if available else reason, name),
            )
            record(
                moment,
                "realm",
                "external",
                from_state=_availability(bool(found["available"])),
                to_state=_availability(available),
                detail=name,
            )

    def external_create(
        self,
        namespace: str,
        *,
        uuid: uuid_module.UUID | None = None,
        name: str = "external",
        image: str = "img-basic",
        hardware_profile: str = "small",
        realm: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Instance:
        """Someone else launches an instance. With ``uuid`` it carries our tag (an orphan to
        cloudstate, if it does not know the UUID); without, it is not ours and never listed.
        """
        spec = LaunchSpec(
            uuid or uuid_module.uuid4(),
            name,
            image,
            hardware_profile,
            realm=realm,
            labels=dict(labels or {}),
        )
        with self._moment() as moment:
            return external_instance(moment, namespace, spec, tagged=uuid is not None)

    def external_stop(self, provider_id: str) -> None:
        self._external(provider_id, Action.STOP)

    def external_start(self, provider_id: str) -> None:
        self._external(provider_id, Action.START)

    def external_reboot(self, provider_id: str) -> None:
        self._external(provider_id, Action.REBOOT)

    def external_terminate(self, provider_id: str) -> None:
        self._external(provider_id, Action.DESTROY)

    # ---------------------------------------------------------------- what really happened

    def instances(self, namespace: str | None = None) -> list[Instance]:
        """Every instance the cloud has now, ours or not, visible yet or not (a god's view)."""
        with self._moment() as moment:
            rows = moment.conn.execute(
                "SELECT * FROM instances WHERE ? IS NULL OR namespace = ? ORDER BY seq",
                (namespace, namespace),
            ).fetchall()
        return [to_instance(row) for row in rows]

    def ledger(self, namespace: str | None = None) -> list[LedgerEntry]:
        """What the cloud did so far, in order: one namespace's creates and transitions, or
        with no namespace everything, the cloud-wide ``realm`` and ``configure`` entries too."""
        with self._moment() as moment:
            rows = moment.conn.execute(
                "SELECT * FROM ledger WHERE ? IS NULL OR namespace = ? ORDER BY seq",
                (namespace, namespace),
            ).fetchall()
        return [ledger_entry(row) for row in rows]

    def creates_per_uuid(self, namespace: str | None = None) -> dict[uuid_module.UUID, int]:
        """How many instances were created for each of our UUIDs (the answer should be 1)."""
        counts: dict[uuid_module.UUID, int] = {}
        for entry in self.ledger(namespace):
            if entry.kind == "create" and entry.uuid is not None:
                counts[entry.uuid] = counts.get(entry.uuid, 0) + 1
        return counts

    def call_counts(self, namespace: str | None = None) -> dict[str, int]:
        """Driver calls made so far by name, failed and throttled ones included."""
        with self._moment() as moment:
            rows = moment.conn.execute(
                "SELECT name, sum(count) AS total FROM calls"
                " WHERE ? IS NULL OR namespace = ? GROUP BY name",
                (namespace, namespace),
            ).fetchall()
        return {row["name"]: row["total"] for row in rows}

    # ---------------------------------------------------------------- machinery

    @contextmanager
    def _moment(self) -> Iterator[Moment]:
        """A transaction in which the cloud has caught up with the present."""
        with self._db.transaction() as conn:
            knobs_json = conn.execute("SELECT value FROM meta WHERE key = 'knobs'").fetchone()
            knobs = SimulatorKnobs.from_json(knobs_json["value"])
            if self._seeded_with != knobs.seed:
                self._rng.seed(knobs.seed)
                self._seeded_with = knobs.seed
            moment = Moment(conn, self._clock(), knobs, self._rng)
            advance(moment)
            yield moment

    def _call(self, namespace: str, call: str, operation: Callable[[Moment], T]) -> T:
        """Count the call, pass the gate, run it; the simulated errors commit what was done.

        Latency is added after the transaction, as the answer's travel time, so a slow
        simulated cloud never holds the shared file's write lock.
        """
        outcome: T | ProviderError
        with self._moment() as moment:
            _count(moment, namespace, call)
            try:
                _gate(moment, namespace, call)
                outcome = operation(moment)
            except ProviderError as exc:
                outcome = exc
        if moment.knobs.latency_seconds:
            time.sleep(moment.knobs.latency_seconds)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def _external(self, provider_id: str, action: Action) -> None:
        with self._moment() as moment:
            apply_action(moment, _find(moment, provider_id), action, "external")


def _count(moment: Moment, namespace: str, call: str) -> None:
    moment.conn.execute(
        "INSERT INTO calls (namespace, name, count) VALUES (?, ?, 1)"
        " ON CONFLICT (namespace, name) DO UPDATE SET count = count + 1",
        (namespace, call),
    )


def _gate(moment: Moment, namespace: str, call: str) -> None:
    """The trouble a call may meet before the cloud does anything, in the order a real one
    would show it: unreachable, credentials refused, throttled, failing."""
    if moment.knobs.unreachable:
        raise ProviderUnavailableError(
            "the simulated cloud is unreachable (knob 'unreachable' is set)", code="Unavailable"
        )
    if namespace in moment.knobs.rejected_namespaces:
        raise ProviderAuthError(
            f"credentials for namespace {namespace!r} were refused (knob 'rejected_namespaces')",
            code="AuthFailure",
        )
    _take_token(moment, namespace)
    rate = moment.knobs.call_failure_rates.get(call, 0.0)
    if rate and moment.rng.random() < rate:
        raise ProviderUnavailableError(
            f"simulated failure of {call} (call_failure_rates[{call!r}] = {rate})",
            code="InternalError",
        )


def _take_token(moment: Moment, namespace: str) -> None:
    """Token bucket per namespace, shared through the file by every process."""
    rate, burst = moment.knobs.throttle_rate, moment.knobs.throttle_burst
    if rate is None:
        return
    row = moment.conn.execute(
        "SELECT tokens, updated_at FROM buckets WHERE namespace = ?", (namespace,)
    ).fetchone()
    elapsed = 0.0 if row is None else max(0.0, moment.now - row["updated_at"])
    tokens = burst if row is None else min(burst, row["tokens"] + elapsed * rate)
    throttled = tokens < 1
    moment.conn.execute(
        "INSERT INTO buckets (namespace, tokens, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (namespace) DO UPDATE SET tokens = excluded.tokens,"
        " updated_at = excluded.updated_at",
        (namespace, tokens if throttled else tokens - 1, moment.now),
    )
    if throttled:
        raise ProviderThrottledError(
            f"request limit exceeded in namespace {namespace!r} "
            f"(simulated token bucket: {rate}/s, burst {burst})",
            code="RequestLimitExceeded",
        )


def _maybe_lose_response(moment: Moment, call: str) -> None:
    rate = moment.knobs.lost_response_rate
    if rate and moment.rng.random() < rate:
        raise ProviderUnavailableError(
            f"simulated lost response: {call} was carried out but its answer never arrived",
            code="RequestTimeout",
        )


def _action(action: Action | str) -> Action:
    try:
        return Action(action)
    except ValueError as exc:
        raise ActionNotSupportedError(f"the simulator has no action {action!r}") from exc


def _find(moment: Moment, provider_id: str, namespace: str | None = None) -> sqlite3.Row:
    """The instance row, as the namespace can see it now (any namespace when None)."""
    row: sqlite3.Row | None = moment.conn.execute(
        "SELECT * FROM instances WHERE provider_id = ?", (provider_id,)
    ).fetchone()
    if row is None or (
        namespace is not None and (row["namespace"] != namespace or row["visible_at"] > moment.now)
    ):
        raise ProviderNotFoundError(
            f"the instance ID {provider_id!r} does not exist", code="InvalidInstanceID.NotFound"
        )
    return row


def _page(
    moment: Moment, namespace: str, after: int, uuids: Sequence[uuid_module.UUID] | None
) -> Page:
    size = moment.knobs.page_size
    query = (
        "SELECT * FROM instances WHERE namespace = ? AND uuid IS NOT NULL AND visible_at <= ?"
        " AND seq > ?"
    )
    params: list[Any] = [namespace, moment.now, after]
    if uuids is not None:
        query += " AND uuid IN (SELECT value FROM json_each(?))"
        params.append(json.dumps([str(value) for value in uuids]))
    rows = moment.conn.execute(query + " ORDER BY seq LIMIT ?", (*params, size + 1)).fetchall()
    more = len(rows) > size
    token = f"{_TOKEN_PREFIX}{rows[size - 1]['seq']}" if more else None
    return Page(tuple(to_instance(row) for row in rows[:size]), token)


def _parse_token(token: str | None) -> int:
    if token is None:
        return 0
    digits = token.removeprefix(_TOKEN_PREFIX)
    if not token.startswith(_TOKEN_PREFIX) or not (digits.isascii() and digits.isdigit()):
        raise ProviderPermanentError(
            f"malformed next_token {token!r}: pass back a token from a previous page",
            code="InvalidParameterValue",
        )
    return int(digits)


def _availability(available: bool) -> str:
    return "available" if available else "unavailable"


def _realms(moment: Moment) -> list[Realm]:
    rows = moment.conn.execute("SELECT name, available, reason FROM realms ORDER BY name")
    return [Realm(row["name"], bool(row["available"]), row["reason"]) for row in rows]

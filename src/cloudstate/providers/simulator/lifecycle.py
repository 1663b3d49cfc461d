"""How simulated instances change state, and the ledger that records every change.

Time passes lazily: a transitional instance has ``next_state``/``next_at``, and every call
first ``advance``s whatever is due, stamping each transition with the logical time it happened
(``next_at``), not the time it was noticed. No background threads, and any process that calls
in moves the shared cloud forward consistently.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from cloudstate.domain.states import Action
from cloudstate.exceptions import ProviderPermanentError
from cloudstate.providers.base import ProviderInstance, normalize_state
from cloudstate.providers.simulator import catalogue as cat
from cloudstate.providers.simulator.database import next_counter
from cloudstate.providers.simulator.knobs import SimulatorKnobs

_SCHEDULE: dict[str, tuple[str, str]] = {
    cat.PENDING: (cat.RUNNING, "boot_seconds"),
    cat.STOPPING: (cat.STOPPED, "stop_seconds"),
    cat.REBOOTING: (cat.RUNNING, "reboot_seconds"),
    cat.SHUTTING_DOWN: (cat.TERMINATED, "shutdown_seconds"),
}
"""A transitional raw state → (the state it reaches on its own, the knob saying how soon)."""

_ACTIONS: dict[Action, tuple[frozenset[str], str]] = {
    Action.START: (frozenset({cat.STOPPED}), cat.PENDING),
    Action.STOP: (frozenset({cat.RUNNING}), cat.STOPPING),
    Action.REBOOT: (frozenset({cat.RUNNING}), cat.REBOOTING),
    Action.DESTROY: (
        frozenset({cat.PENDING, cat.RUNNING, cat.STOPPING, cat.STOPPED, cat.REBOOTING}),
        cat.SHUTTING_DOWN,
    ),
}
"""An action → (the raw states it is accepted in, the raw state it moves the instance to)."""

_GONE_OR_GOING = frozenset({cat.SHUTTING_DOWN, cat.TERMINATED})


@dataclass
class Moment:
    """One call's view of the cloud: its transaction, the time, the knobs and the dice."""

    conn: sqlite3.Connection
    now: float
    knobs: SimulatorKnobs
    rng: random.Random


@dataclass(frozen=True)
class LedgerEntry:
    """One thing the cloud really did.

    ``kind`` is ``create`` or ``transition`` for instances, ``realm`` or ``configure`` for the
    cloud itself; ``cause`` is ``launch``, ``action:<name>``, ``auto`` or ``external``.
    """

    seq: int
    at: float
    namespace: str | None
    provider_id: str | None
    uuid: UUID | None
    kind: str
    from_state: str | None
    to_state: str | None
    cause: str
    detail: str = ""


def record(
    moment: Moment,
    kind: str,
    cause: str,
    *,
    at: float | None = None,
    namespace: str | None = None,
    provider_id: str | None = None,
    uuid: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: str = "",
) -> None:
    """Append one entry to the ledger (``at`` defaults to the moment's time)."""
    moment.conn.execute(
        "INSERT INTO ledger (at, namespace, provider_id, uuid, kind, from_state, to_state,"
        " cause, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            moment.now if at is None else at,
            namespace,
            provider_id,
            uuid,
            kind,
            from_state,
            to_state,
            cause,
            detail,
        ),
    )


def ledger_entry(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        seq=row["seq"],
        at=row["at"],
        namespace=row["namespace"],
        provider_id=row["provider_id"],
        uuid=UUID(row["uuid"]) if row["uuid"] else None,
        kind=row["kind"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        cause=row["cause"],
        detail=row["detail"],
    )


def schedule(state: str, at: float, knobs: SimulatorKnobs) -> tuple[str | None, float | None]:
    """Where an instance entering ``state`` at ``at`` goes next on its own, and when."""
    if state not in _SCHEDULE:
        return None, None
    next_state, knob = _SCHEDULE[state]
    return next_state, at + float(getattr(knobs, knob))


def enter(moment: Moment, row: sqlite3.Row, state: str, at: float, cause: str) -> None:
    """Move one instance to ``state`` at logical time ``at``: addresses, schedule, ledger.

    A public address is assigned on reaching ``running`` and released on ``stopped`` (so a
    stop/start really changes it); a terminated instance has no address at all.
    """
    public, private, launched_at = row["public_address"], row["private_address"], row["launched_at"]
    if state == cat.RUNNING and public is None:
        public = cat.public_address(next_counter(moment.conn, "public_counter"))
    elif state == cat.STOPPED:
        public = None
    elif state == cat.TERMINATED:
        public = private = None
    elif state == cat.PENDING and row["state"] == cat.STOPPED:
        launched_at = at
    next_state, next_at = schedule(state, at, moment.knobs)
    moment.conn.execute(
        "UPDATE instances SET state = ?, next_state = ?, next_at = ?, state_changed_at = ?,"
        " public_address = ?, private_address = ?, launched_at = ? WHERE seq = ?",
        (state, next_state, next_at, at, public, private, launched_at, row["seq"]),
    )
    record(
        moment,
        "transition",
        cause,
        at=at,
        namespace=row["namespace"],
        provider_id=row["provider_id"],
        uuid=row["uuid"],
        from_state=row["state"],
        to_state=state,
    )


def advance(moment: Moment) -> None:
    """Apply every transition that is due, in time order, then forget old terminated ones."""
    while True:
        due = moment.conn.execute(
            "SELECT * FROM instances WHERE next_at <= ? ORDER BY next_at, seq LIMIT 500",
            (moment.now,),
        ).fetchall()
        if not due:
            break
        for row in due:
            enter(moment, row, row["next_state"], row["next_at"], "auto")
    moment.conn.execute(  # the literal state lets SQLite use the partial index
        "DELETE FROM instances WHERE state = 'terminated' AND state_changed_at <= ?",
        (moment.now - moment.knobs.terminated_retention_seconds,),
    )


def apply_action(moment: Moment, row: sqlite3.Row, action: Action, cause: str) -> None:
    """Do ``action`` to one instance now, or refuse it as the cloud would.

    Destroying an instance that is already going or gone is a no-op (idempotent, like EC2's
    TerminateInstances); any other action in the wrong state is ``IncorrectInstanceState``.
    """
    if action is Action.DESTROY and row["state"] in _GONE_OR_GOING:
        return
    accepted_in, target = _ACTIONS[action]
    if row["state"] not in accepted_in:
        raise ProviderPermanentError(
            f"cannot {action} instance {row['provider_id']} in state {row['state']}",
            code="IncorrectInstanceState",
        )
    enter(moment, row, target, moment.now, cause)


def to_instance(row: sqlite3.Row, key_material: str | None = None) -> ProviderInstance:
    """A stored instance as the driver reports it (private key material only when given)."""
    return ProviderInstance(
        provider_id=row["provider_id"],
        uuid=UUID(row["uuid"]) if row["uuid"] else None,
        state=normalize_state(row["state"], cat.STATE_MAP),
        raw_state=row["state"],
        public_addresses=_addresses(row["public_address"]),
        private_addresses=_addresses(row["private_address"]),
        realm=row["realm"],
        image=row["image"],
        hardware_profile=row["hardware_profile"],
        launched_at=datetime.fromtimestamp(row["launched_at"], UTC),
        key_fingerprint=row["key_fingerprint"],
        key_material=key_material,
        extra={
            "namespace": row["namespace"],
            "name": row["name"],
            "tags": json.loads(row["tags"]),
            "keyname": row["keyname"],
            "memory": row["memory"],
            "cpu": row["cpu"],
            "storage": row["storage"],
        },
    )


def _addresses(address: str | None) -> tuple[str, ...]:
    return (address,) if address else ()

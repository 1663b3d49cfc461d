"""Creating simulated instances: checking a launch like a cloud would, then writing it.

Every refusal is a ``ProviderError`` carrying a provider-style code and a reason that names
the bad value and the valid ones, so cloudstate can show the operator something useful.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from cloudstate.domain.hardware import ResolvedHardware
from cloudstate.exceptions import (
    HardwareProfileError,
    ProviderCapacityError,
    ProviderError,
    ProviderPermanentError,
)
from cloudstate.providers.base import TAG_UUID, LaunchOutcome, LaunchSpec, ProviderInstance
from cloudstate.providers.simulator import catalogue as cat
from cloudstate.providers.simulator.database import next_counter
from cloudstate.providers.simulator.lifecycle import (
    Moment,
    record,
    schedule,
    to_instance,
)

_PROFILES = {profile.id: profile for profile in cat.PROFILES}
_IMAGES = {image.id: image for image in cat.IMAGES}


@dataclass(frozen=True)
class NewInstance:
    """Everything needed to write one instance, checked."""

    namespace: str
    uuid: UUID | None
    name: str
    image: str
    hardware: ResolvedHardware
    realm: str
    key: cat.KeyPair
    keyname: str | None
    user_data: str | None
    tags: Mapping[str, str]


def launch(moment: Moment, namespace: str, spec: LaunchSpec) -> LaunchOutcome:
    """One spec of a ``create_many``: an instance, or the error that refused it."""
    if moment.knobs.honor_client_token:
        existing = _live_instance(moment.conn, namespace, spec.uuid)
        if existing is not None:  # EC2 ClientToken: the same request gets the same instance
            return LaunchOutcome(spec.uuid, instance=to_instance(existing))
    try:
        new = checked(moment, namespace, spec)
        _check_capacity(moment, namespace)
        rate = moment.knobs.launch_failure_rate
        if rate and moment.rng.random() < rate:
            raise ProviderPermanentError(
                f"simulated launch failure (launch_failure_rate = {rate})", code="InternalError"
            )
    except ProviderError as exc:
        return LaunchOutcome(spec.uuid, error=exc)
    row = insert(moment, new, cause="launch")
    return LaunchOutcome(spec.uuid, instance=to_instance(row, new.key.private_key))


def checked(
    moment: Moment, namespace: str, spec: LaunchSpec, *, tagged: bool = True
) -> NewInstance:
    """The spec as an instance to write, or the ``ProviderError`` a cloud would answer.

    ``tagged=False`` leaves out our UUID tag: an instance someone else made, not ours.
    """
    _check_image(spec.image)
    hardware = _resolve_hardware(spec)
    _check_user_data(spec.user_data)
    realm = _choose_realm(moment.conn, spec.realm)
    key = cat.named_key_pair(spec.keyname) if spec.keyname else cat.generate_key_pair()
    tags = {**spec.labels, "Name": spec.name}
    if tagged:
        tags[TAG_UUID] = str(spec.uuid)
    return NewInstance(
        namespace=namespace,
        uuid=spec.uuid if tagged else None,
        name=spec.name,
        image=spec.image,
        hardware=hardware,
        realm=realm,
        key=key,
        keyname=spec.keyname or f"generated-{spec.uuid}",
        user_data=spec.user_data,
        tags=tags,
    )


def insert(moment: Moment, new: NewInstance, cause: str) -> sqlite3.Row:
    """Write a new ``pending`` instance and its ``create`` ledger entry; return its row."""
    counter = next_counter(moment.conn, "instance_counter")
    salt = moment.conn.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()["value"]
    provider_id = "i-" + hashlib.sha256(f"{salt}:{counter}".encode()).hexdigest()[:17]
    now = moment.now
    next_state, next_at = schedule(cat.PENDING, now, moment.knobs)
    values = {
        "provider_id": provider_id,
        "namespace": new.namespace,
        "uuid": str(new.uuid) if new.uuid else None,
        "name": new.name,
        "image": new.image,
        "realm": new.realm,
        **new.hardware.as_dict(),
        "hardware_profile": new.hardware.profile,
        "keyname": new.keyname,
        "key_fingerprint": new.key.fingerprint,
        "user_data": new.user_data,
        "tags": json.dumps(dict(new.tags), sort_keys=True),
        "state": cat.PENDING,
        "next_state": next_state,
        "next_at": next_at,
        "created_at": now,
        "visible_at": now + moment.knobs.visibility_delay_seconds,
        "launched_at": now,
        "state_changed_at": now,
        "private_address": cat.private_address(counter),
    }
    moment.conn.execute(
        f"INSERT INTO instances ({', '.join(values)})"
        f" VALUES ({', '.join(':' + column for column in values)})",
        values,
    )
    record(
        moment,
        "create",
        cause,
        namespace=new.namespace,
        provider_id=provider_id,
        uuid=str(new.uuid) if new.uuid else None,
        to_state=cat.PENDING,
    )
    row: sqlite3.Row = moment.conn.execute(
        "SELECT * FROM instances WHERE provider_id = ?", (provider_id,)
    ).fetchone()
    return row


def external_instance(
    moment: Moment, namespace: str, spec: LaunchSpec, *, tagged: bool
) -> ProviderInstance:
    """Create an instance "by someone else" (console, script): no capacity or failure dice."""
    new = checked(moment, namespace, spec, tagged=tagged)
    return to_instance(insert(moment, new, cause="external"), new.key.private_key)


def _live_instance(conn: sqlite3.Connection, namespace: str, uuid: UUID) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM instances WHERE namespace = ? AND uuid = ? AND state != ?"
        " ORDER BY seq LIMIT 1",
        (namespace, str(uuid), cat.TERMINATED),
    ).fetchone()
    return row


def _check_image(image: str) -> None:
    if image not in _IMAGES:
        raise ProviderPermanentError(
            f"unknown image {image!r}; images: {', '.join(_IMAGES)}", code="InvalidAMIID.NotFound"
        )


def _resolve_hardware(spec: LaunchSpec) -> ResolvedHardware:
    profile = _PROFILES.get(spec.hardware_profile)
    if profile is None:
        raise ProviderPermanentError(
            f"unknown hardware profile {spec.hardware_profile!r}; profiles: {', '.join(_PROFILES)}",
            code="InvalidParameterValue",
        )
    try:
        return profile.resolve({"memory": spec.memory, "cpu": spec.cpu, "storage": spec.storage})
    except HardwareProfileError as exc:
        raise ProviderPermanentError(str(exc), code="InvalidParameterValue") from exc


def _check_user_data(user_data: str | None) -> None:
    size = len(user_data.encode("utf-8")) if user_data else 0
    if size > cat.MAX_USER_DATA_BYTES:
        raise ProviderPermanentError(
            f"user data is {size} bytes; the limit is {cat.MAX_USER_DATA_BYTES}",
            code="InvalidParameterValue",
        )


def _choose_realm(conn: sqlite3.Connection, wanted: str | None) -> str:
    """The requested realm if it exists and is available; else the first available one."""
    realms = conn.execute("SELECT name, available, reason FROM realms ORDER BY name").fetchall()
    if wanted is None:
        for realm in realms:
            if realm["available"]:
                return str(realm["name"])
        raise ProviderCapacityError(
            "no realm is available: "
            + "; ".join(f"{realm['name']}: {realm['reason'] or 'unavailable'}" for realm in realms),
            code="InsufficientInstanceCapacity",
        )
    chosen = next((realm for realm in realms if realm["name"] == wanted), None)
    if chosen is None:
        names = ", ".join(realm["name"] for realm in realms)
        raise ProviderPermanentError(
            f"unknown realm {wanted!r}; realms: {names}", code="InvalidParameterValue"
        )
    if not chosen["available"]:
        raise ProviderCapacityError(
            f"realm {wanted!r} is unavailable: {chosen['reason'] or 'no reason given'}",
            code="InsufficientInstanceCapacity",
        )
    return wanted


def _check_capacity(moment: Moment, namespace: str) -> None:
    capacity = moment.knobs.capacity
    if capacity is None:
        return
    live = moment.conn.execute(
        "SELECT count(*) FROM instances WHERE namespace = ? AND state != ?",
        (namespace, cat.TERMINATED),
    ).fetchone()[0]
    if live >= capacity:
        raise ProviderCapacityError(
            f"instance limit of {capacity} live instances reached in namespace {namespace!r}",
            code="InstanceLimitExceeded",
        )

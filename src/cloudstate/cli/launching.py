"""``cloudstate launch``: an order from flags or a file, and the wait until it settles."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cloudstate.cli.connect import ExitCode
from cloudstate.cli.output import counts_text, err
from cloudstate.client import Client, Instance, Order
from cloudstate.domain.orders import OrderState
from cloudstate.exceptions import FieldError, ValidationError

POLL_SECONDS = 0.5
UNSETTLED = frozenset({"new", "pending", "unknown"})


@dataclass
class Flags:
    """The order-level fields given on the command line (``None``: not given)."""

    account: str | None = None
    image: str | None = None
    hardware_profile: str | None = None
    memory: int | None = None
    cpu: int | None = None
    storage: int | None = None
    keyname: str | None = None
    realm: str | None = None
    user_data: str | None = None
    policy: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    count: int | None = None
    uuids: list[str] = field(default_factory=list)
    name_prefix: str | None = None


def build_order(file: Path | None, flags: Flags) -> dict[str, Any]:
    """The order to submit: the file (if any), with every given flag overriding its field.

    Instances come from the file, or from ``--uuid`` / ``--count`` (fresh UUIDs), not both;
    ``--name-prefix web`` names them web-1, web-2, ...
    """
    order = load_order(file) if file else {}
    for name in ("account", "image", "hardware_profile", "memory", "cpu", "storage"):
        _set(order, name, getattr(flags, name))
    for name in ("keyname", "realm", "policy"):
        _set(order, name, getattr(flags, name))
    _set(order, "user_data", _user_data(flags.user_data))
    if flags.labels:
        order["labels"] = {**(order.get("labels") or {}), **flags.labels}
    if flags.count is not None or flags.uuids or "instances" not in order:
        if "instances" in order:
            raise ValidationError(
                "give the instances in the file or with --count/--uuid, not both", field="--file"
            )
        order["instances"] = _instances(flags)
    return order


def _set(order: dict[str, Any], name: str, value: object) -> None:
    if value is not None:
        order[name] = value


def load_order(path: Path) -> dict[str, Any]:
    """A YAML or JSON order file (JSON is YAML, so either parser reads ``.json``)."""
    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}", field="--file") from exc
    if not isinstance(loaded, dict):
        raise ValidationError(f"{path} must hold a mapping (an order)", field="--file")
    return loaded


def _user_data(value: str | None) -> str | None:
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc}", field="--user-data") from exc


def _instances(flags: Flags) -> list[dict[str, Any]]:
    if flags.count is not None and flags.uuids and flags.count != len(flags.uuids):
        raise ValidationError(
            f"--count {flags.count} but {len(flags.uuids)} --uuid given", field="--count"
        )
    uuids = flags.uuids or [str(uuid.uuid4()) for _ in range(flags.count or 1)]
    instances: list[dict[str, Any]] = [{"uuid": value} for value in uuids]
    if flags.name_prefix:
        for number, instance in enumerate(instances, start=1):
            instance["name"] = f"{flags.name_prefix}-{number}"
    return instances


def needs_account(order: dict[str, Any]) -> bool:
    """Neither an account nor failover accounts are given anywhere in the order."""
    instances = order.get("instances") or []
    return not (order.get("account") or order.get("accounts")) and not any(
        isinstance(item, dict) and (item.get("account") or item.get("accounts"))
        for item in instances
    )


def default_account(client: Client) -> str:
    """``simulator`` if it exists, else the only account; otherwise ask for ``--account``."""
    names = [account.name for account in client.accounts()]
    if "simulator" in names:
        return "simulator"
    if len(names) == 1:
        return names[0]
    listed = ", ".join(names) or "none yet: cloudstate account add"
    raise ValidationError(f"which account? give --account (accounts: {listed})", field="account")


# --- speaking the command line's language --------------------------------------------------

FLAG_OF = {
    "account": "--account",
    "image": "--image",
    "hardware_profile": "--profile",
    "memory": "--memory",
    "cpu": "--cpu",
    "storage": "--storage",
    "keyname": "--key",
    "realm": "--realm",
    "user_data": "--user-data",
    "policy": "--policy",
    "labels": "--label",
    "uuid": "--uuid",
    "name": "--name-prefix",
}
"""An order's field → the flag that sets it."""
_PER_INSTANCE = re.compile(r"^instances\.\d+\.")


def as_flags(exc: ValidationError) -> ValidationError:
    """The API's complaint about an order built from flags, named by those flags:
    ``instances.0.image: required`` → ``--image: required`` (once, not once per instance)."""
    named: dict[str, FieldError] = {}
    for error in exc.errors:
        field_name = _PER_INSTANCE.sub("", error.field)
        flag = FLAG_OF.get(field_name.split(".")[0])
        message = error.message.partition(" (give it on the instance or the order)")[0]
        shown = FieldError(flag or error.field, message if flag else error.message)
        named.setdefault(str(shown), shown)
    return ValidationError(named.values())


HARDWARE_UNITS = {"memory": "MiB", "cpu": "cores", "storage": "GiB"}


def granted_otherwise(flags: Flags, order: Order) -> list[str]:
    """A note for each hardware override the profile did not grant as asked (a range clamps,
    an enum rounds up): ``--memory 99999: granted 8192 MiB (profile medium)``."""
    notes: set[str] = set()
    for name, unit in HARDWARE_UNITS.items():
        asked = getattr(flags, name)
        for instance in order.instances if asked is not None else ():
            granted = instance.hardware.get(name)
            if granted is not None and granted != asked:
                profile = instance.hardware_profile
                notes.add(f"--{name} {asked}: granted {granted} {unit} (profile {profile})")
    return sorted(notes)


# --- waiting ------------------------------------------------------------------------------------

"""Order states that are final: the order and its instances change no more."""


def settled(instance: Instance) -> bool:
    """The launch is over for this instance: it runs, or it ended otherwise."""
    return str(instance.state) not in UNSETTLED and str(instance.operation or "") != "launching"


def gone(instance: Instance) -> bool:
    """Nothing is left of this instance (what a cancel or a rollback waits for)."""
    return str(instance.state) == "terminated"


def ended(order: Order) -> bool:
    return OrderState(order.state).finished


def summary(order: Order) -> str:
    """``order launching: 3 running, 1 pending``."""
    return f"order {order.state}: {counts_text(order.counts)}"


def wait(
    client: Client,
    order: Order,
    timeout: float,
    *,
    label: str = "launching",
    done: Callable[[Instance], bool] = settled,
) -> tuple[Order, bool]:
    """Poll the order until it has finished (True) or ``timeout`` seconds passed (False),
    with a progress bar on stderr: instances ``done`` of all, and the order's state.

    A launch waits for the order, not only its instances: under ``all_or_nothing`` a failure
    is followed by a rollback, and the order ends ``rolled_back`` once all of it is destroyed.
    """
    deadline = time.monotonic() + timeout
    columns = (
        SpinnerColumn(),
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[line]}", markup=False),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(label, total=len(order.instances), line="")
        while True:
            count = sum(done(instance) for instance in order.instances)
            progress.update(task, completed=count, line=summary(order))
            if ended(order):
                return order, True
            if time.monotonic() >= deadline:
                return order, False
            time.sleep(POLL_SECONDS)
            order = client.get_order(order.id)


def outcome(order: Order, finished: bool, timeout: float) -> tuple[ExitCode, str]:
    """A launch's exit code and, unless its order ended ``running``, why."""
    if not finished:
        return ExitCode.TIMEOUT, (
            f"order still {order.state} after {timeout:g}s ({counts_text(order.counts)}); "
            f"it goes on: cloudstate orders show {order.id}"
        )
    if str(order.state) == "running":
        return ExitCode.OK, ""
    missing = sum(str(i.state) != "running" for i in order.instances)
    reason = f": {order.reason}" if order.reason else ""
    return ExitCode.LAUNCH_FAILED, (
        f"order {order.state}{reason} ({missing} of {len(order.instances)} not running)"
    )

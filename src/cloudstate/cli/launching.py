"""``cloudstate launch``: an order from flags or a file, and the wait until it settles."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
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
from cloudstate.cli.output import err
from cloudstate.client import Client, Instance, Order
from cloudstate.exceptions import ValidationError

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
    instances = order.get("instances") or []
    return not order.get("account") and not any(
        isinstance(item, dict) and item.get("account") for item in instances
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


# --- waiting ------------------------------------------------------------------------------------


def settled(instance: Instance) -> bool:
    """The launch is over for this instance: it runs, or it ended otherwise."""
    return str(instance.state) not in UNSETTLED and str(instance.operation or "") != "launching"


def summary(instances: Sequence[Instance]) -> str:
    counts = Counter(str(instance.state) for instance in instances)
    return ", ".join(f"{state} {count}" for state, count in sorted(counts.items()))


def wait(client: Client, order: Order, timeout: float) -> tuple[Order, bool]:
    """Poll the order, with a progress bar on stderr, until every instance settled (True) or
    ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]launching"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("launch", total=len(order.instances), states="")
        while True:
            done = sum(settled(instance) for instance in order.instances)
            progress.update(task, completed=done, states=summary(order.instances))
            if done == len(order.instances):
                return order, True
            if time.monotonic() >= deadline:
                return order, False
            time.sleep(POLL_SECONDS)
            order = client.get_order(order.id)


def outcome(order: Order, finished: bool, timeout: float) -> tuple[ExitCode, str]:
    """The exit code and, unless all is well, why."""
    if not finished:
        waiting = sum(not settled(i) for i in order.instances)
        return ExitCode.TIMEOUT, (
            f"{waiting} instance(s) still launching after {timeout:g}s (the launch goes on; "
            f"cloudstate ls --order {order.id})"
        )
    failed = [i for i in order.instances if str(i.state) != "running"]
    if failed:
        return ExitCode.LAUNCH_FAILED, f"{len(failed)} of {len(order.instances)} not running"
    return ExitCode.OK, ""

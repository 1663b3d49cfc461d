"""The simulated cloud's console, for the API: what the cloud really holds, and changes made
"by someone else" (outside cloudstate), an outage, a realm going down.

Every ``simulator`` account of this service is reachable: its cloud is the file its config names
(default ``<home>/simulator.db``) and its namespace (default: the account name), exactly as the
driver opens them. Nothing here goes through cloudstate's own records of the instances: that is
the point, cloudstate must notice these changes by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cloudstate.exceptions import ConflictError, NotFoundError, ProviderError, ValidationError
from cloudstate.providers.base import TAG_UUID
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.providers.simulator.driver import DEFAULT_FILE
from cloudstate.service.accounts import list_accounts
from cloudstate.store import Store

ExternalAction = Literal["stop", "start", "reboot", "terminate"]

ACCEPTS: dict[str, frozenset[str]] = {
    "stop": frozenset({"running"}),
    "start": frozenset({"stopped"}),
    "reboot": frozenset({"running"}),
    "terminate": frozenset({"pending", "running", "stopping", "stopped", "rebooting"}),
}
"""Raw states a filter selects for each action (ids given one by one are tried as they are)."""


@dataclass(frozen=True)
class SimulatedInstance:
    """One instance as the simulated cloud holds it (its raw state, not cloudstate's)."""

    account: str
    provider_id: str
    name: str
    state: str
    uuid: str | None
    realm: str | None
    public_addresses: tuple[str, ...]
    private_addresses: tuple[str, ...]
    labels: dict[str, str]


@dataclass(frozen=True)
class Selection:
    """Which instances an external action is for: ids, or filters that must all match."""

    provider_ids: Sequence[str] = ()
    every: bool = False
    account: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    @property
    def filtered(self) -> bool:
        return self.every or bool(self.account or self.labels or self.name)

    def check(self) -> None:
        if self.provider_ids and self.filtered:
            raise ValidationError("give provider ids or filters, not both", field="provider_ids")
        if not self.provider_ids and not self.filtered:
            raise ValidationError(
                "give provider ids, or select with all, account, labels or name",
                field="provider_ids",
            )

    def matches(self, instance: SimulatedInstance) -> bool:
        return (
            (self.account is None or instance.account == self.account)
            and (self.name is None or instance.name == self.name)
            and all(instance.labels.get(k) == v for k, v in self.labels.items())
        )


@dataclass(frozen=True)
class ExternalResult:
    """What one external action did: the state the instance is in now, or why it was refused."""

    provider_id: str
    account: str
    name: str
    ok: bool
    state: str
    error: str = ""


@dataclass(frozen=True)
class _Place:
    """Where one simulator account's instances live."""

    account: str
    path: Path
    namespace: str


def _places(store: Store, home: Path, account: str | None) -> list[_Place]:
    found = [
        _Place(
            view.name,
            Path(view.config.get("path") or home / DEFAULT_FILE),
            str(view.config.get("namespace") or view.name),
        )
        for view in list_accounts(store)
        if view.provider == "simulator" and (account is None or view.name == account)
    ]
    if account is not None and not found:
        raise NotFoundError("simulator account", account)
    return found


@contextmanager
def _opened(places: Sequence[_Place]) -> Iterator[dict[Path, SimulatedCloud]]:
    """Each cloud file once (several accounts may share one); files not yet made are skipped."""
    with ExitStack() as stack:
        clouds: dict[Path, SimulatedCloud] = {}
        for place in places:
            if place.path not in clouds and place.path.exists():
                clouds[place.path] = stack.enter_context(SimulatedCloud(place.path))
        yield clouds


def _listed(
    places: Sequence[_Place], clouds: Mapping[Path, SimulatedCloud]
) -> list[SimulatedInstance]:
    found = []
    for place in places:
        cloud = clouds.get(place.path)
        for item in cloud.instances(place.namespace) if cloud else ():
            tags = dict(item.extra.get("tags") or {})
            found.append(
                SimulatedInstance(
                    account=place.account,
                    provider_id=item.provider_id,
                    name=str(item.extra.get("name") or ""),
                    state=item.raw_state,
                    uuid=tags.get(TAG_UUID),
                    realm=item.realm,
                    public_addresses=item.public_addresses,
                    private_addresses=item.private_addresses,
                    labels={k: v for k, v in tags.items() if k not in (TAG_UUID, "Name")},
                )
            )
    return found


def instances(store: Store, home: Path, account: str | None = None) -> list[SimulatedInstance]:
    """Every instance the simulated cloud holds for the simulator accounts (or ``account``)."""
    places = _places(store, home, account)
    with _opened(places) as clouds:
        return _listed(places, clouds)


def act(
    store: Store, home: Path, action: ExternalAction, selection: Selection
) -> list[ExternalResult]:
    """Do ``action`` "by someone else" to each selected instance, one at a time.

    Ids are tried as given (an unknown one or a refused one is a result with its error);
    filters select only instances whose raw state the action applies to.
    """
    selection.check()
    places = _places(store, home, selection.account)
    with _opened(places) as clouds:
        held = _listed(places, clouds)
        if selection.provider_ids:
            known = {item.provider_id: item for item in held}
            chosen = [known.get(pid) or pid for pid in dict.fromkeys(selection.provider_ids)]
        else:
            wanted = ACCEPTS[action]
            chosen = [i for i in held if selection.matches(i) and i.state in wanted]
        by_account = {place.account: clouds.get(place.path) for place in places}
        return [_apply(by_account, action, item) for item in chosen]


def _apply(
    clouds: Mapping[str, SimulatedCloud | None],
    action: ExternalAction,
    item: SimulatedInstance | str,
) -> ExternalResult:
    if isinstance(item, str):
        return ExternalResult(item, "", "", False, "", "no simulator account holds this id")
    cloud = clouds[item.account]
    assert cloud is not None  # it was listed from this cloud
    method: Callable[[str], None] = getattr(cloud, f"external_{action}")
    try:
        method(item.provider_id)
    except ProviderError as exc:
        return ExternalResult(
            item.provider_id, item.account, item.name, False, item.state, str(exc)
        )
    now = next(i for i in cloud.instances() if i.provider_id == item.provider_id)
    return ExternalResult(item.provider_id, item.account, item.name, True, now.raw_state)


def _one_cloud(store: Store, home: Path, account: str | None) -> _Place:
    """The cloud of ``account``; without one, of the account named ``simulator`` or the only
    simulator account."""
    places = _places(store, home, account)
    named = [place for place in places if place.account == "simulator"]
    chosen = places if len(places) == 1 else named
    if not chosen:
        listed = ", ".join(place.account for place in places) or "none"
        raise ValidationError(
            f"which simulator account? give account (simulator accounts: {listed})",
            field="account",
        )
    if not chosen[0].path.exists():  # its driver makes it, with the account's initial knobs
        raise ConflictError(f"the simulated cloud of account {chosen[0].account} is not made yet")
    return chosen[0]


def configure(
    store: Store, home: Path, changes: Mapping[str, Any], account: str | None = None
) -> dict[str, Any]:
    """Change the knobs of one simulated cloud (all of them with no changes: a read); the knobs
    now in force. Unknown knobs are a ValidationError naming each."""
    place = _one_cloud(store, home, account)
    with SimulatedCloud(place.path) as cloud:
        knobs = cloud.configure(**changes) if changes else cloud.knobs()
    return knobs.as_dict()


def set_realm(
    store: Store, home: Path, realm: str, available: bool, reason: str, account: str | None = None
) -> None:
    """Make a realm of one simulated cloud available or not (for every account on it)."""
    place = _one_cloud(store, home, account)
    with SimulatedCloud(place.path) as cloud:
        cloud.set_realm_available(realm, available, reason)

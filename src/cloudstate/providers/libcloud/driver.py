"""The ``libcloud`` driver: the ``Driver`` interface over any Apache Libcloud compute driver.

Libcloud's ``list_nodes()`` is one unpaginated call on most drivers, so ``list_page`` pages the
answer itself: nodes sorted by provider id, the token is the last id of the previous page (so
nodes appearing or vanishing between pages shift nothing). Only our nodes are listed: those
whose metadata, tags or name carry our UUID (``mapping.uuid_of``), plus those in the account's
side file (below).

Drivers differ in what they can do; an action the driver lacks (its method is not overridden,
or raises ``NotImplementedError``) is an ``ActionNotSupportedError`` at request time.

A driver that drops both our metadata and our name (Libcloud's ``dummy`` ignores the name it is
given) cannot carry our UUID; then it is kept in a side file in the cloudstate home, keyed by
provider id. That file is written after the provider answers, so a crash in between leaves an
instance we cannot recognise: the side file is for such drivers only, never the first choice.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from libcloud.compute.base import NodeDriver, NodeSize

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.states import Action
from cloudstate.exceptions import (
    ActionNotSupportedError,
    ProviderNotFoundError,
    ProviderPermanentError,
)
from cloudstate.providers.base import (
    TAG_UUID_ALT,
    Image,
    LaunchOutcome,
    LaunchSpec,
    Page,
    ProviderInstance,
    Realm,
    client_token,
    create_each,
)
from cloudstate.providers.libcloud.errors import call
from cloudstate.providers.libcloud.mapping import name_with_uuid, to_instance, to_profile, uuid_of
from cloudstate.providers.libcloud.quirks import Quirks
from cloudstate.providers.libcloud.settings import LibcloudSettings

log = logging.getLogger("cloudstate.providers.libcloud")

METHODS: dict[Action, tuple[str, ...]] = {
    Action.START: ("start_node", "ex_start_node"),
    Action.STOP: ("stop_node", "ex_stop_node"),
    Action.REBOOT: ("reboot_node",),
    Action.DESTROY: ("destroy_node",),
}
"""Where each action lives: the standard method first, then the older ``ex_`` spelling."""
UNSUPPORTED = "action not supported by this provider: {}"
UNAVAILABLE_CATALOGUE = ("list_locations", "list_images", "list_sizes")


def not_supported(action: str) -> ActionNotSupportedError:
    return ActionNotSupportedError(UNSUPPORTED.format(action))


class LibcloudDriver:
    """Implements ``cloudstate.providers.base.Driver``; raises only ``ProviderError``s."""

    kind = "libcloud"

    def __init__(
        self, node_driver: Any, settings: LibcloudSettings, quirks: Quirks, side_file: Path
    ) -> None:
        self.node_driver = node_driver
        self.settings = settings
        self.quirks = quirks
        self.page_size = settings.page_size
        self._side = _SideFile(side_file)
        self._parameters = _parameters(node_driver.create_node)
        self.uuid_in = settings.uuid_in or quirks.uuid_in or self._default_uuid_place()

    # launching ------------------------------------------------------------------------------

    def create_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchOutcome]:
        """One outcome per spec; throttling, unreachability or rejected credentials stop the
        batch (raised when nothing was sent yet, else the rest get that error)."""
        return create_each(specs, self._create_one)

    def _create_one(self, spec: LaunchSpec) -> ProviderInstance:
        if not _overrides(self.node_driver, "create_node"):
            raise not_supported("create")
        arguments = self._create_arguments(spec)
        try:
            node = call(lambda: self.node_driver.create_node(**arguments))
        except ActionNotSupportedError as exc:
            raise not_supported("create") from exc
        provider_id = self.quirks.provider_id(node)
        if uuid_of(node) != spec.uuid:
            self._side.put(provider_id, spec.uuid)
        return to_instance(node, provider_id, spec.uuid)

    def _create_arguments(self, spec: LaunchSpec) -> dict[str, Any]:
        marker = {TAG_UUID_ALT: str(spec.uuid)}
        arguments: dict[str, Any] = {
            "name": name_with_uuid(spec.name, spec.uuid) if self.uuid_in == "name" else spec.name,
            "size": self._size(spec.hardware_profile),
            "image": self._image(spec.image),
        }
        realm = spec.realm or self.settings.location
        optional: dict[str, Any] = {
            "location": self._location(realm) if realm else None,
            "ex_metadata": {**spec.labels, **marker} if self.uuid_in == "metadata" else None,
            "ex_tags": {**spec.labels, **marker} if self.uuid_in == "tags" else None,
            "ex_keyname": spec.keyname,
            "ex_userdata": spec.user_data,
            "ex_clienttoken": client_token(spec.uuid),
        }
        arguments.update(
            {key: value for key, value in optional.items() if value and key in self._parameters}
        )
        return arguments

    def _size(self, wanted: str) -> Any:
        sizes = self._catalogue("list_sizes")
        if sizes is None:  # the driver cannot list sizes: pass the id through
            return NodeSize(wanted, wanted, 0, 0, None, 0.0, self.node_driver)
        return _pick(sizes, wanted, f"hardware profile {wanted!r} is not offered by this driver")

    def _image(self, wanted: str) -> Any:
        images = self._catalogue("list_images")
        if images is None:
            raise ProviderPermanentError(f"image {wanted!r}: this driver cannot list images")
        return _pick(images, wanted, f"image {wanted!r} not found")

    def _location(self, wanted: str) -> Any:
        locations = self._catalogue("list_locations")
        if locations is None:
            return None
        return _pick(locations, wanted, f"realm {wanted!r} not found")

    def _default_uuid_place(self) -> str:
        return "metadata" if "ex_metadata" in self._parameters else "name"

    # listing --------------------------------------------------------------------------------

    def list_page(
        self, token: str | None = None, *, uuids: Sequence[uuid.UUID] | None = None
    ) -> Page:
        wanted = None if uuids is None else set(uuids)
        ours = [instance for instance in self._ours() if wanted is None or instance.uuid in wanted]
        ours.sort(key=lambda instance: instance.provider_id)
        after = [i for i in ours if token is None or i.provider_id > token]
        page = tuple(after[: self.page_size])
        more = len(after) > self.page_size
        return Page(page, next_token=page[-1].provider_id if more else None)

    def _ours(self) -> list[ProviderInstance]:
        nodes = call(self.node_driver.list_nodes)
        side = self._side.read()
        found = []
        for node in nodes:
            provider_id = self.quirks.provider_id(node)
            instance_uuid = uuid_of(node) or side.get(provider_id)
            if instance_uuid is not None:
                found.append(to_instance(node, provider_id, instance_uuid))
        return found

    # actions --------------------------------------------------------------------------------

    def act(self, provider_id: str, action: Action) -> None:
        method = self._method_for(action)
        if method is None:
            raise not_supported(action.value)
        node = self._node(provider_id)
        try:
            accepted = call(lambda: method(node))
        except ActionNotSupportedError as exc:
            raise not_supported(action.value) from exc
        if accepted is False:
            raise ProviderPermanentError(f"the provider refused to {action.value} {provider_id}")
        if action is Action.DESTROY:
            self.quirks.after_destroy(self.node_driver, node)

    def _method_for(self, action: Action) -> Callable[[Any], Any] | None:
        for name in METHODS[action]:
            if _overrides(self.node_driver, name):
                method: Callable[[Any], Any] = getattr(self.node_driver, name)
                return method
        return None

    def _node(self, provider_id: str) -> Any:
        for node in call(self.node_driver.list_nodes):
            if self.quirks.provider_id(node) == provider_id:
                return node
        raise ProviderNotFoundError(f"instance {provider_id} not found", code="NotFound")

    # catalogue ------------------------------------------------------------------------------

    def list_realms(self) -> list[Realm]:
        locations = self._catalogue("list_locations")
        if locations is None:
            configured = self.settings.location
            return [Realm(configured, available=True)] if configured else []
        return [
            Realm(str(location.name or location.id), _available(location)) for location in locations
        ]

    def list_images(self) -> list[Image]:
        images = self._catalogue("list_images")
        if images is None:
            configured = self.settings.image
            return [Image(configured, configured)] if configured else []
        return [Image(str(image.id), str(image.name or "")) for image in images]

    def list_hardware_profiles(self) -> list[HardwareProfile]:
        sizes = self._catalogue("list_sizes")
        if sizes is None:
            configured = self.settings.size
            return [HardwareProfile(configured)] if configured else []
        return [to_profile(size) for size in sizes]

    def _catalogue(self, method: str) -> list[Any] | None:
        """The driver's listing, or None when the driver cannot list that at all."""
        try:
            return list(call(getattr(self.node_driver, method)))
        except ActionNotSupportedError:
            return None

    def close(self) -> None:
        closer = getattr(getattr(self.node_driver, "connection", None), "close", None)
        if callable(closer):
            try:
                closer()
            except Exception:  # closing is best effort; the driver is not used again
                log.debug("closing the libcloud connection failed", exc_info=True)


class _SideFile:
    """provider id → our UUID, for drivers that keep neither our metadata nor our name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[str, uuid.UUID]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {str(key): uuid.UUID(str(value)) for key, value in dict(raw).items()}

    def put(self, provider_id: str, instance_uuid: uuid.UUID) -> None:
        with self._lock:
            entries = {key: str(value) for key, value in self.read().items()}
            entries[provider_id] = str(instance_uuid)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(entries, sort_keys=True))
            os.replace(temporary, self.path)


def _pick(things: list[Any], wanted: str, missing: str) -> Any:
    """The catalogue entry whose id (else name) is ``wanted``."""
    for attribute in ("id", "name"):
        for thing in things:
            if str(getattr(thing, attribute, "")) == wanted:
                return thing
    raise ProviderPermanentError(missing, code="NotFound")


def _available(location: Any) -> bool:
    extra = location.extra if isinstance(location.extra, dict) else {}
    status = str(extra.get("status", "")).lower()
    return status not in {"down", "unavailable", "disabled"}


def _overrides(node_driver: Any, name: str) -> bool:
    """The driver implements ``name`` itself (``NodeDriver``'s own raise NotImplementedError)."""
    implemented = getattr(type(node_driver), name, None)
    return implemented is not None and implemented is not getattr(NodeDriver, name, None)


def _parameters(function: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()

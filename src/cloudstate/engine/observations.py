"""Provider listings → domain observations (the seam between drivers and the service)."""

from __future__ import annotations

from collections.abc import Iterable

from cloudstate.domain.observations import Observation, Origin
from cloudstate.providers.base import ProviderInstance


def observation(instance: ProviderInstance) -> Observation | None:
    """The observation for one of our instances; None for an instance without our tag."""
    if instance.uuid is None:
        return None
    return Observation(
        uuid=instance.uuid,
        provider_id=instance.provider_id,
        state=instance.state,
        raw_state=instance.raw_state,
        public_addresses=tuple(instance.public_addresses),
        private_addresses=tuple(instance.private_addresses),
        key_fingerprint=instance.key_fingerprint,
        origin=Origin(instance.image, instance.hardware_profile, instance.realm),
    )


def observations(instances: Iterable[ProviderInstance]) -> list[Observation]:
    return [seen for seen in map(observation, instances) if seen is not None]

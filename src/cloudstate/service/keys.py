"""Re-encrypting every secret at rest under the newest key (``cloudstate keys rotate``).

Rotation with no downtime: put the new key first in ``CLOUDSTATE_SECRET_KEYS`` and keep the old
one after it (both decrypt), restart, run ``keys rotate``, then drop the old key. Covered:
account credentials, generated private keys, webhook signing secrets (current and previous).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from cloudstate.store import Store
from cloudstate.store.tables import Instance, Subscription


@dataclass(frozen=True)
class Rotated:
    credentials: int
    key_material: int
    webhook_secrets: int


def rotate_all(store: Store) -> Rotated:
    """One transaction: every stored secret re-encrypted, or none."""
    box = store.secrets
    with store.unit_of_work() as uow:
        credentials = uow.accounts.rotate_secrets()
        keys = 0
        for instance in uow.session.scalars(
            select(Instance).where(Instance.key_material.is_not(None))
        ):
            assert instance.key_material is not None
            instance.key_material = box.rotate(instance.key_material)
            keys += 1
        hooks = 0
        for subscription in uow.session.scalars(select(Subscription)):
            if subscription.secret is not None:
                subscription.secret = box.rotate(subscription.secret)
                hooks += 1
            if subscription.previous_secret is not None:
                subscription.previous_secret = box.rotate(subscription.previous_secret)
                hooks += 1
        uow.commit()
    return Rotated(credentials, keys, hooks)

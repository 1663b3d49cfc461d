"""Key rotation re-encrypts every secret at rest, so the old key can be dropped."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

from cloudstate.config import load_settings
from cloudstate.domain.orders import resolve_order
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.store import Store


def _seed(store: Store) -> uuid.UUID:
    """An account with credentials, an instance with a private key, a signed subscription."""
    order = resolve_order(
        {
            "account": "aws",
            "image": "i",
            "hardware_profile": "p",
            "instances": [{"uuid": str(uuid.uuid4())}],
        }
    )
    with store.unit_of_work() as uow:
        account = uow.accounts.add("aws", "ec2", credentials={"secret": "s3cr3t"})
        row = uow.instances.add(order.instances[0], account, None)
        uow.instances.set_key_material(row, "PRIVATE KEY")
        uow.subscriptions.add(
            "http", "https://example.com/h", SubscriptionFilter(), secret="whsec_abc"
        )
        uow.commit()
    return order.instances[0].uuid


def test_keys_rotate_moves_every_secret_to_the_new_key(home: Path) -> None:
    """With ``new,old`` configured, ``cloudstate keys rotate`` re-encrypts credentials, key
    material and webhook secrets; afterwards the new key alone reads them all."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = Store.from_settings(load_settings(home=home, secret_keys=old))
    before.upgrade()
    instance_uuid = _seed(before)
    before.close()

    env = {**os.environ, "CLOUDSTATE_HOME": str(home), "CLOUDSTATE_SECRET_KEYS": f"{new},{old}"}
    done = subprocess.run(
        [sys.executable, "-m", "cloudstate", "keys", "rotate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 account credential(s), 1 private key(s) and 1 webhook secret(s)" in done.stdout

    after = Store.from_settings(load_settings(home=home, secret_keys=new))
    with after.unit_of_work() as uow:
        assert uow.accounts.credentials(uow.accounts.get("aws")) == {"secret": "s3cr3t"}
        assert uow.instances.key_material(uow.instances.get(instance_uuid)) == "PRIVATE KEY"
        [subscription] = uow.subscriptions.list()
        assert uow.subscriptions.secret(subscription) == "whsec_abc"
    after.close()


def test_keys_new_prints_a_usable_key() -> None:
    """``cloudstate keys new`` prints a key that CLOUDSTATE_SECRET_KEYS accepts."""
    done = subprocess.run(
        [sys.executable, "-m", "cloudstate", "keys", "new"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    Fernet(done.stdout.strip().encode())  # raises if it is not a valid key

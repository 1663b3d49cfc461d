"""The ``ec2`` provider: Amazon EC2 (or anything speaking its API, such as moto) via boto3.

Imported only when an ``ec2`` account is used (the registry loads it lazily), so cloudstate
without EC2 accounts never imports boto3. ``docs/providers.md`` describes the account keys.
"""

from __future__ import annotations

from cloudstate.providers.ec2.driver import Ec2Driver, create_driver
from cloudstate.providers.ec2.errors import translate
from cloudstate.providers.ec2.mapping import STATE_MAP
from cloudstate.providers.ec2.settings import DEFAULT_INSTANCE_TYPES, Ec2Settings

__all__ = [
    "DEFAULT_INSTANCE_TYPES",
    "STATE_MAP",
    "Ec2Driver",
    "Ec2Settings",
    "create_driver",
    "translate",
]

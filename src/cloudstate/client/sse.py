"""Server-Sent Events: the stream's CloudEvents read back as ``Event``, and when to reconnect.

The stream sends ``id: <seq>``, ``event: <type>`` and ``data: <CloudEvent JSON>``; httpx-sse
parses the wire format. The envelope carries the event's own attributes, and its ``data`` adds
``sequence`` (per-instance number) and ``cursor`` (global seq); ``to_event`` undoes that so a
streamed event equals the same event read from the page endpoint. The reconnection policy
(``Reconnect``) is shared by both clients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from httpx_sse import ServerSentEvent

from cloudstate.client.models import Event

DEFAULT_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


def retry_of(message: ServerSentEvent, current: float | None) -> float | None:
    """The reconnect delay the server asked for last (``retry:`` is in milliseconds)."""
    return current if message.retry is None else message.retry / 1000


def to_event(message: ServerSentEvent) -> Event:
    """The ``Event`` a stream message carries (the same fields the page endpoint gives)."""
    envelope: dict[str, Any] = json.loads(message.data)
    data = dict(envelope.get("data") or {})
    instance_seq = data.pop("sequence", None)
    seq = data.pop("cursor", None)
    if seq is None:
        seq = int(message.id or 0)
    subject = str(envelope.get("subject") or "")
    kind = str(envelope["type"])
    instance = data.get("instance")
    described: dict[str, Any] = instance if isinstance(instance, dict) else {}
    order_id = described.get("order_id") or data.get("order_id")
    if order_id is None and kind.startswith("order."):
        order_id = subject
    return Event.model_validate(
        {
            "seq": seq,
            "id": envelope["id"],
            "type": kind,
            "subject": subject,
            "time": envelope["time"],
            "instance_uuid": subject if instance_seq is not None else None,
            "instance_seq": instance_seq,
            "order_id": order_id,
            "account": described.get("account") or data.get("account"),
            "data": data,
        }
    )


@dataclass
class Reconnect:
    """When to try again after the stream broke, and when to give up.

    The delay starts at the server's ``retry:`` (or one second) and doubles with each
    consecutive failure up to 30 s. Any connection the server accepted resets the count, so only
    a server that stays unreachable for ``retries`` attempts in a row ends the iteration.
    """

    retries: int | None
    failures: int = 0

    def connected(self) -> None:
        self.failures = 0

    def failed(self) -> bool:
        """Count a failure; False when it is one too many."""
        self.failures += 1
        return self.retries is None or self.failures <= self.retries

    def delay(self, retry: float | None) -> float:
        base = DEFAULT_RETRY_SECONDS if retry is None else retry
        return float(min(base * 2 ** max(self.failures - 1, 0), MAX_RETRY_SECONDS))

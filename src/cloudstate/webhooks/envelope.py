"""CloudEvents 1.0 structured JSON: the body of every webhook, exactly one event per request.

The attributes are the event's own: ``id`` (stable across retries, like ``webhook-id``),
``type`` as the SPEC names it (``instance.created``, ...), ``subject`` (the instance uuid for
instance events), ``time`` in RFC 3339 UTC. ``data`` is the event's data plus two numbers a
receiver needs to order and resume: ``sequence`` (the per-instance number, 1, 2, 3, ... with
no gaps; ``null`` for events that are not about one instance) and ``cursor`` (the global
sequence, the watch cursor). These two keys win over any key of the same name in the data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cloudstate.domain.events import EventRecord

SPEC_VERSION = "1.0"
DEFAULT_SOURCE = "/cloudstate"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def cloud_event(event: EventRecord, *, source: str = DEFAULT_SOURCE) -> dict[str, Any]:
    """The CloudEvents attributes of ``event`` as a JSON-ready mapping.

    ``source`` is a URI-reference naming this deployment (for example
    ``https://cloudstate.example.com/cloudstate``); it must not be empty.
    """
    if not source:
        raise ValueError("a CloudEvents source must not be empty")
    return {
        "specversion": SPEC_VERSION,
        "id": str(event.id),
        "source": source,
        "type": event.type,
        "subject": event.subject,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "data": {**event.data, "sequence": event.instance_seq, "cursor": event.seq},
    }


def encode(envelope: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def event_body(event: EventRecord, *, source: str = DEFAULT_SOURCE) -> bytes:
    """``encode(cloud_event(event, source=source))``."""
    return encode(cloud_event(event, source=source))


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a ``Z`` suffix (naive input is refused)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime; events are timestamped in UTC")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

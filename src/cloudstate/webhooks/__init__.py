"""Webhooks: the CloudEvents envelope, Standard Webhooks signatures, the HTTP sender seam, and
the callback URL policy that keeps webhooks off internal addresses."""

from __future__ import annotations

from cloudstate.webhooks.envelope import cloud_event, encode, event_body
from cloudstate.webhooks.safety import WebhookPolicy
from cloudstate.webhooks.sender import (
    AiohttpSender,
    RecordingSender,
    Sender,
    SendResult,
    SentRequest,
)
from cloudstate.webhooks.signing import generate_secret, sign, verify, webhook_headers

__all__ = [
    "AiohttpSender",
    "RecordingSender",
    "SendResult",
    "Sender",
    "SentRequest",
    "WebhookPolicy",
    "cloud_event",
    "encode",
    "event_body",
    "generate_secret",
    "sign",
    "verify",
    "webhook_headers",
]

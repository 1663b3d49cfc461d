"""Standard Webhooks signatures, so any receiver can verify with the reference libraries.

A request carries three headers:

- ``webhook-id``: the event id, the same on every retry (receivers de-duplicate on it);
- ``webhook-timestamp``: unix seconds when this attempt was signed (receivers refuse stale ones);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, one per
  active secret, separated by spaces, so a receiver holding either the old or the new secret
  accepts the request while a secret is being rotated.

Secrets look like ``whsec_<base64 of 24-64 random bytes>``; the HMAC key is the decoded bytes.
Verification compares in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
import time
from collections.abc import Mapping, Sequence

from cloudstate.exceptions import ValidationError

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE_SECONDS = 300.0

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def generate_secret(size: int = 32) -> str:
    """A new ``whsec_`` secret of ``size`` random bytes (24 to 64)."""
    if not MIN_SECRET_BYTES <= size <= MAX_SECRET_BYTES:
        raise ValueError(f"size must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(size)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: its base64 part decoded (the ``whsec_`` prefix is optional).

    Raises ``ValidationError`` on field ``secret`` when it is not base64 or decodes to nothing.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("must be 'whsec_' followed by base64", field="secret") from None
    if not key:
        raise ValidationError("must not be empty", field="secret")
    return key


def check_secret(secret: str) -> bytes:
    """The HMAC key of a secret a caller chose, refused (``ValidationError`` on ``secret``)
    when malformed or shorter than ``MIN_SECRET_BYTES``: a short key is guessable, and
    Standard Webhooks secrets are 24 to 64 bytes. (Secrets stored before this rule still
    sign: ``secret_key`` alone does not ask for a length.)"""
    key = secret_key(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ValidationError(
            f"must decode to at least {MIN_SECRET_BYTES} bytes (this one has {len(key)}); "
            "omit it to get a generated one",
            field="secret",
        )
    return key


SECRET_PATTERN = r"^(whsec_)?([A-Za-z0-9+/]{4}){8,}([A-Za-z0-9+/]{2}(==)?|[A-Za-z0-9+/]{3}=?)?$"  # noqa: S105
"""What ``check_secret`` accepts, as the OpenAPI document declares it: base64 of 24+ bytes."""


def sign(secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` header value: one ``v1,`` signature per secret, in order."""
    keys = [secret_key(s) for s in _as_list(secrets)]
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    return " ".join(f"v1,{_signature(key, msg_id, timestamp, body)}" for key in keys)


def webhook_headers(
    secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes | str
) -> dict[str, str]:
    """The three Standard Webhooks headers (no signature when there is no secret)."""
    headers = {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp)}
    if _as_list(secrets):
        headers[SIGNATURE_HEADER] = sign(secrets, msg_id, timestamp, body)
    return headers


def verify(
    secrets: str | Sequence[str],
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when ``headers`` carry a fresh ``v1`` signature of ``body`` by any of ``secrets``.

    Header names are matched case-insensitively; a timestamp further than ``tolerance_seconds``
    from ``now`` (default: the clock) fails, which stops replays of captured requests.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get(ID_HEADER, "")
    stamp = lowered.get(TIMESTAMP_HEADER, "")
    offered = lowered.get(SIGNATURE_HEADER, "")
    if not (msg_id and stamp.isdigit() and offered):
        return False
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    candidates = [
        part.split(",", 1)[1].encode() for part in offered.split() if part.startswith("v1,")
    ]
    expected = [
        _signature(secret_key(s), msg_id, timestamp, body).encode() for s in _as_list(secrets)
    ]
    # compare every pair, without stopping early, so timing does not tell which one matched
    matches = [hmac.compare_digest(e, c) for e in expected for c in candidates]
    return any(matches)


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    payload = body.encode("utf-8") if isinstance(body, str) else body
    message = f"{msg_id}.{timestamp}.".encode() + payload
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")


def _as_list(secrets: str | Sequence[str]) -> list[str]:
    listed = [secrets] if isinstance(secrets, str) else list(secrets)
    return [secret for secret in listed if secret]

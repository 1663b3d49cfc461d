"""Secrets at rest: credentials, key material and webhook secrets are Fernet tokens.

Keys come from ``CLOUDSTATE_SECRET_KEYS`` (newest first; older keys still decrypt, which is how
rotation works) or, on a single machine, from a key generated once into ``<home>/secret.key``
with mode 0600. ``SecretBox.rotate`` re-encrypts a token under the newest key.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cloudstate.config import Settings
from cloudstate.exceptions import ConfigurationError, CryptoError


class SecretBox:
    """Encrypts and decrypts small secrets with the newest key; decrypts with any key."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("CLOUDSTATE_SECRET_KEYS", "no key configured")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError:
            raise ConfigurationError(
                "CLOUDSTATE_SECRET_KEYS",
                "each key must be 32 url-safe base64-encoded bytes (make one with "
                "'cloudstate keys new')",
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_keys:
            return cls([key.get_secret_value().encode() for key in settings.secret_keys])
        return cls([load_or_create_key(settings.secret_key_path)])

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise CryptoError(
                "a stored secret cannot be decrypted with any configured key "
                "(was a key removed from CLOUDSTATE_SECRET_KEYS too early?)"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """The same secret, encrypted under the newest key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise CryptoError(
                "a stored secret cannot be decrypted with any configured key"
            ) from None

    def encrypt_json(self, value: Mapping[str, str]) -> bytes:
        return self.encrypt(json.dumps(dict(value), sort_keys=True).encode())

    def decrypt_json(self, token: bytes) -> dict[str, str]:
        value = json.loads(self.decrypt(token))
        if not isinstance(value, dict):
            raise CryptoError("stored credentials are not a JSON object")
        return {str(k): str(v) for k, v in value.items()}


def new_key() -> str:
    return Fernet.generate_key().decode()


def load_or_create_key(path: Path) -> bytes:
    """Read the local key, creating it (mode 0600) on first use.

    The key is written to a private temporary file and linked into place, so two processes
    starting together agree on one key and neither reads a half-written file.
    """
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_bytes().strip()

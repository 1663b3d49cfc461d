"""Settings: one typed object, read from ``CLOUDSTATE_*`` variables, validated at start.

Build it with ``load_settings()`` at the edge (CLI, app factory, ``CloudState``) and pass it in;
nothing imports a global settings object. An invalid value fails at once with a
``ConfigurationError`` naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cloudstate.exceptions import ConfigurationError

ENV_PREFIX = "CLOUDSTATE_"
_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(?i){_LABEL}(\.{_LABEL})*\.?")
_PLACEHOLDERS = frozenset({"changeme", "change-me", "secret", "password", "xxx", "todo", "test"})


class Settings(BaseSettings):
    """Everything an operator can set. Paths default under ``home``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, frozen=True
    )

    home: Path = Field(
        default=Path("~/.cloudstate"),
        description="Directory for the SQLite file, the API token and the local secret key.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; default: the SQLite file cloudstate.db in the home.",
    )
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Fernet keys, newest first, for credentials at rest; "
        "default: a key generated once in the home.",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field(
        default="auto", description="'json', 'text', or 'auto' (JSON unless stderr is a TTY)."
    )
    host: str = Field(default="127.0.0.1", description="Where the API listens.")
    port: int = Field(default=8080, ge=1, le=65535)
    url: str = Field(
        default="", description="The API the CLI and client talk to; default http://host:port."
    )
    token: SecretStr | None = Field(
        default=None, description="API token for the CLI; default: the token file in the home."
    )
    start_timeout_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a process starting keeps retrying a database that does not "
        "answer (one log line per attempt), before it exits non-zero.",
    )
    stream_max_per_token: int = Field(
        default=50,
        ge=1,
        description="Open event streams (SSE) one token may hold on one API process; more "
        "are refused with 429 and Retry-After.",
    )
    stream_max_total: int = Field(
        default=1000,
        ge=1,
        description="Open event streams one API process serves in all; more get 429.",
    )
    event_retention_days: float = Field(
        default=7.0, gt=0, description="Events older than this are pruned (the last one is kept)."
    )
    simulator_fast: bool = Field(
        default=False, description="Create the embedded simulator account in fast mode."
    )
    reconcile_fast_interval: float = Field(default=1.0, gt=0, le=60)
    reconcile_slow_interval: float = Field(default=30.0, gt=0, le=3600)
    pending_grace_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long a launched instance may be absent from listings "
        "(eventual consistency) before it counts as missing.",
    )

    unreachable_after_failures: int = Field(
        default=3,
        ge=1,
        description="Consecutive failed listings before an account's instances become "
        "unknown (provider unreachable); one blip does not flap the fleet.",
    )
    launch_batch_size: int = Field(default=50, ge=1, le=1000)
    launch_lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed launch not recorded by then is looked up again."
    )
    reconcile_lease_seconds: float = Field(
        default=60.0, gt=0, description="An account cycle lease; renewed after every page."
    )
    launch_retry_limit: int = Field(default=8, ge=1, description="Retryable launch failures.")
    launch_timeout_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="An order's instances not running by then fail (an order may set its own).",
    )
    action_timeout_seconds: float = Field(
        default=600.0, gt=0, description="An action not settled in this time has failed."
    )
    delivery_batch_size: int = Field(default=100, ge=1, le=1000)
    delivery_concurrency: int = Field(default=50, ge=1, le=1000)
    delivery_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    delivery_lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed delivery not acknowledged by then is retried."
    )
    delivery_per_endpoint_concurrency: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Deliveries in flight at once to one endpoint (URL host:port), so a slow "
        "receiver cannot take every slot.",
    )
    delivery_breaker_threshold: int = Field(
        default=5,
        ge=1,
        description="Consecutive failures (no answer, timeout, 5xx) that open an endpoint's "
        "circuit: its deliveries then wait, unattempted, for the cool-down.",
    )
    delivery_breaker_cooldown_seconds: float = Field(
        default=30.0,
        gt=0,
        description="First cool-down of an open circuit; doubles with each failed probe.",
    )
    delivery_breaker_max_cooldown_seconds: float = Field(
        default=600.0, gt=0, description="The longest a circuit stays open between probes."
    )
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs and/or exact host names webhooks may reach although "
        "they are loopback, private, link-local or otherwise internal (refused by default).",
    )
    delivery_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Seconds before each attempt (comma-separated); after the last, "
        "the delivery is dead-lettered.",
    )

    @field_validator("delivery_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("delivery_retry_schedule", mode="after")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("needs at least one delay, none negative")
        return value

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _split_allow(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_allow", mode="after")
    @classmethod
    def _check_allow(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOST_NAME.fullmatch(entry):
                    raise ValueError(
                        f"{entry!r} is neither a CIDR, an IP address nor a host name"
                    ) from None
        return entries

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secret_keys", mode="after")
    @classmethod
    def _refuse_placeholders(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if key.get_secret_value().lower() in _PLACEHOLDERS:
                raise ValueError(
                    "is a placeholder, not a key; generate one with 'cloudstate keys new'"
                )
        return keys

    @field_validator("log_format", mode="after")
    @classmethod
    def _check_format(cls, value: str) -> str:
        if value not in {"auto", "json", "text"}:
            raise ValueError(f"must be auto, json or text, not {value!r}")
        return value

    @field_validator("log_level", mode="after")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, not {value!r}")
        return level

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_request(self) -> Settings:
        if self.delivery_lease_seconds <= self.delivery_timeout_seconds:
            raise ValueError(
                "delivery_lease_seconds must exceed delivery_timeout_seconds, or a slow request "
                "could be claimed and sent again while still in flight"
            )
        return self

    @model_validator(mode="after")
    def _cooldowns_in_order(self) -> Settings:
        if self.delivery_breaker_max_cooldown_seconds < self.delivery_breaker_cooldown_seconds:
            raise ValueError(
                "delivery_breaker_max_cooldown_seconds must not be below "
                "delivery_breaker_cooldown_seconds"
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.home / 'cloudstate.db'}")
        return self

    @property
    def api_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def secret_key_path(self) -> Path:
        return self.home / "secret.key"

    @property
    def simulator_path(self) -> Path:
        return self.home / "simulator.db"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and ``overrides``), or raise ``ConfigurationError``."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        problems = {
            ENV_PREFIX + str(error["loc"][0] if error["loc"] else "settings").upper(): str(
                error["msg"]
            ).removeprefix("Value error, ")
            for error in exc.errors(include_url=False)
        }
        first, message = next(iter(problems.items()))
        others = "; ".join(f"{name}: {text}" for name, text in list(problems.items())[1:])
        raise ConfigurationError(first, f"{message}; {others}" if others else message) from None

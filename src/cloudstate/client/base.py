"""What both clients share: where the API is, which token to send, and reading answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pydantic

from cloudstate.client import errors
from cloudstate.client.calls import Call, Params
from cloudstate.config import Settings, load_settings
from cloudstate.exceptions import ConfigurationError

T = TypeVar("T")

STREAM_PATH = "/v1/events/stream"
STREAM_READ_TIMEOUT = 60.0
"""The stream sends a keep-alive every 15 s; silence this long means the connection is dead."""


@dataclass(frozen=True)
class Endpoint:
    """The API's base URL and the bearer token (``None``: requests go without one)."""

    url: str
    token: str | None

    @classmethod
    def resolve(cls, url: str | None, token: str | None, settings: Settings | None) -> Endpoint:
        """Explicit arguments win; then ``CLOUDSTATE_URL`` (or host and port) and
        ``CLOUDSTATE_TOKEN``; then the token file ``cloudstate serve`` wrote in the home."""
        if url is None or token is None:
            settings = settings or load_settings()
            url = url or settings.api_url
            token = token if token is not None else _settings_token(settings)
        return cls(url.rstrip("/"), token or None)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "cloudstate-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def _settings_token(settings: Settings) -> str | None:
    if settings.token is not None:
        return settings.token.get_secret_value()
    path = settings.token_path
    try:
        return path.read_text().strip() if path.is_file() else None
    except OSError as exc:
        raise ConfigurationError("CLOUDSTATE_TOKEN", f"cannot read {path}: {exc}") from exc


def timeout_for(call: Call[Any], usual: float) -> float:
    return usual + call.extra_timeout


def stream_timeout(usual: float) -> httpx.Timeout:
    return httpx.Timeout(usual, read=max(usual, STREAM_READ_TIMEOUT))


def stream_request(filters: Params, cursor: int, resumed: bool) -> tuple[Params, dict[str, str]]:
    """The first connection asks ``?after=``; a reconnection sends ``Last-Event-ID``, as a
    browser's EventSource would, so the server resumes right after the last event we saw."""
    if resumed:
        return filters, {"Last-Event-ID": str(cursor), "Accept": "text/event-stream"}
    return [*filters, ("after", str(cursor))], {"Accept": "text/event-stream"}


def content_headers(call: Call[Any]) -> dict[str, str]:
    return {"Content-Type": "application/json"} if call.body is not None else {}


def answer(call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the mapped error for an error status or an unreadable body."""
    status = response.status_code
    if response.is_error and status not in call.also_ok:
        raise errors.error_for(status, errors.problem_of(response), call.path)
    try:
        if call.text:
            return call.read(response.text)
        body = response.json() if response.content else None
        return call.read(body)
    except (ValueError, KeyError, TypeError, pydantic.ValidationError) as exc:
        raise errors.ServerError(status, "unexpected answer", f"{call.path}: {exc}") from exc


def raise_for_stream(response: httpx.Response) -> None:
    """Raise the mapped error if the stream was refused (the body must have been read)."""
    if response.is_error:
        problem = errors.problem_of(response)
        raise errors.error_for(response.status_code, problem, STREAM_PATH)

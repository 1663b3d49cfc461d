"""What both clients share: where the API is, which token to send, and reading answers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydantic

from cloudstate.client import errors
from cloudstate.client.calls import Call, Params
from cloudstate.exceptions import ConfigurationError

T = TypeVar("T")

STREAM_PATH = "/v1/events/stream"
STREAM_READ_TIMEOUT = 60.0
"""The stream sends a keep-alive every 15 s; silence this long means the connection is dead."""


DEFAULT_HOME = "~/.cloudstate"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", "8080"


@dataclass(frozen=True)
class Endpoint:
    """The API's base URL and the bearer token (``None``: requests go without one)."""

    url: str
    token: str | None

    @classmethod
    def resolve(
        cls,
        url: str | None,
        token: str | None,
        home: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Endpoint:
        """Explicit arguments win; then ``CLOUDSTATE_URL`` (or ``CLOUDSTATE_HOST`` and
        ``CLOUDSTATE_PORT``) and ``CLOUDSTATE_TOKEN``; then the token file ``cloudstate serve``
        wrote in the home (``home``, else ``CLOUDSTATE_HOME``, else ``~/.cloudstate``).

        The same variables the server reads, read here without the server's settings: a
        client needs none of its secrets, and a placeholder among them must not stop it.
        """
        url = url or environ.get("CLOUDSTATE_URL") or _host_and_port(environ)
        if token is None:
            token = environ.get("CLOUDSTATE_TOKEN") or _token_file(home, environ)
        return cls(url.rstrip("/"), token or None)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "cloudstate-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def _host_and_port(environ: Mapping[str, str]) -> str:
    host = environ.get("CLOUDSTATE_HOST") or DEFAULT_HOST
    return f"http://{host}:{environ.get('CLOUDSTATE_PORT') or DEFAULT_PORT}"


def _token_file(home: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> str | None:
    path = Path(home or environ.get("CLOUDSTATE_HOME") or DEFAULT_HOME).expanduser() / "token"
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

"""A live cloudstate API for tests: uvicorn on a free loopback port over an embedded engine.

``LiveApi`` wires the pieces the way ``cloudstate serve`` does (``CloudState`` with its workers
started in background threads, ``ApiContext`` over its store, pool and wake-up, ``create_app``)
and serves them with a real uvicorn server in a thread, so tests speak real HTTP. Every response
its clients receive is noted in ``seen`` (error bodies included), so a test can check afterwards
what the whole suite saw: which operations ran, and that every error was problem+json.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import uvicorn

from cloudstate.api import ApiContext, create_app
from cloudstate.embedded import CloudState
from cloudstate.service.tokens import create_token, revoke_token
from databases import truncate

FAST = {  # the engine's cadence in tests: launches and actions settle in about a second
    "pending_grace_seconds": 0.5,
    "reconcile_fast_interval": 0.25,
    "reconcile_slow_interval": 1.0,
    "webhook_allow": ["127.0.0.1"],  # the tests' receivers listen on loopback
}


@dataclass(frozen=True)
class Seen:
    """One response as a client received it."""

    method: str
    path: str
    status: int
    content_type: str
    body: Any  # the decoded JSON body of an error response; None otherwise


@dataclass(frozen=True)
class Tokens:
    """Plaintext bearer tokens, one per scope, plus one that has been revoked."""

    admin: str
    write: str
    read: str
    revoked: str


@dataclass
class LiveApi:
    """``with LiveApi(home) as api:`` serves the API at ``api.url`` until the block ends."""

    home: Path
    seen: list[Seen] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=lambda: dict(FAST))
    cs: CloudState = field(init=False)
    url: str = field(init=False)
    tokens: Tokens = field(init=False)
    _server: uvicorn.Server = field(init=False)
    _thread: threading.Thread = field(init=False)
    _clients: list[httpx.Client] = field(init=False, default_factory=list)

    def __enter__(self) -> LiveApi:
        self.cs = CloudState(home=self.home, simulator_fast=True, **self.settings)
        try:
            self.tokens = _tokens(self.cs)
            self.cs.start()
            self._serve()
        except BaseException:
            self.cs.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in self._clients:
            client.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.cs.close()

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for this server, with ``token`` as its bearer token (closed on exit)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(30.0, read=10.0),
            event_hooks={"response": [self._note]},
        )
        self._clients.append(client)
        return client

    def _note(self, response: httpx.Response) -> None:
        content_type = response.headers.get("content-type", "")
        body = None
        if response.status_code >= 400:
            response.read()
            try:
                body = response.json()
            except json.JSONDecodeError:
                body = response.text
        request = response.request
        self.seen.append(
            Seen(request.method, request.url.path, response.status_code, content_type, body)
        )

    def _serve(self) -> None:
        cs = self.cs
        app = create_app(ApiContext(cs.settings, cs.store, cs.engine.pool, wake=cs.engine.wake))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and this one's is
        # 0: without it every response waits ~40 ms on Nagle and the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"


def _tokens(cs: CloudState) -> Tokens:
    made = {scope: create_token(cs.store, f"test-{scope}", [scope])[1] for scope in SCOPES}
    _, revoked = create_token(cs.store, "test-revoked", ["admin"])
    revoke_token(cs.store, "test-revoked")
    return Tokens(admin=made["admin"], write=made["write"], read=made["read"], revoked=revoked)


SCOPES = ("admin", "write", "read")


@contextmanager
def live_api_on(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[LiveApi]:
    """A ``LiveApi`` with the ``FAST`` cadence on the database ``request.param`` names:
    ``sqlite`` (its own file), or ``postgresql`` (the session's migrated database, emptied)."""
    settings: dict[str, Any] = dict(FAST)
    if request.param == "postgresql":
        settings["database_url"] = request.getfixturevalue("_postgres_schema")
        truncate(settings["database_url"])
    with LiveApi(tmp_path_factory.mktemp(name), settings=settings) as live:
        yield live

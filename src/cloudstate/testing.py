"""Fakes and factories for tests, cloudstate's own and its users'.

The fake cloud is the real ``simulator`` provider in fast mode: a file-backed cloud whose
instances boot in 50 ms, with knobs for every kind of trouble (see ``SimulatorKnobs``)::

    cloud = simulated_cloud(tmp_path / "cloud.db", visibility_delay_seconds=0.2)
    driver = SimulatorDriver(cloud, "acct")
    ...
    assert all(count == 1 for count in cloud.creates_per_uuid("acct").values())
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from cloudstate.providers.simulator import SimulatedCloud, SimulatorDriver, SimulatorKnobs

__all__ = [
    "Received",
    "SimulatedCloud",
    "SimulatorDriver",
    "WebhookReceiver",
    "simulated_cloud",
    "wait_until",
]

T = TypeVar("T")


def simulated_cloud(path: Path | str, *, fast: bool = True, **knobs: Any) -> SimulatedCloud:
    """A simulated cloud at ``path`` with test timings (unless ``fast=False``) and ``knobs``.

    Unlike the driver factory, the knobs are applied even when the file already exists: a test
    that asks for a knob means it.
    """
    wanted = SimulatorKnobs.fast(**knobs) if fast else SimulatorKnobs.from_mapping(knobs)
    cloud = SimulatedCloud(path, initial=wanted)
    try:
        if cloud.knobs() != wanted:
            cloud.configure(**wanted.as_dict())
    except BaseException:
        cloud.close()
        raise
    return cloud


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    what: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``AssertionError`` (naming ``what``) after ``timeout`` seconds, so a test that waits
    for a state that never comes fails with a sentence, not a hang.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate!r}")
        time.sleep(interval)


@dataclass(frozen=True)
class Received:
    """One request a ``WebhookReceiver`` got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (ephemeral port) in its own thread, for webhook tests.

    ``respond`` maps each request to (status, seconds to wait before answering): change it to
    simulate an outage or a slow receiver. ``overlaps`` lists subjects that had two requests in
    flight at once (per-instance ordering forbids that). Use as a context manager.
    """

    respond: Callable[[Received], tuple[int, float]] = lambda _r: (200, 0.0)
    requests: list[Received] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    port: int = 0
    _in_flight: set[str] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict[str, Any]]:
        """Every request body received so far, parsed, in arrival order."""
        return [received.event for received in list(self.requests)]

    def start(self) -> WebhookReceiver:
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        if not ready.wait(5):
            raise RuntimeError("webhook receiver did not start")
        return self

    def stop(self) -> None:
        if self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._runner = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(request.path, dict(request.headers), body, time.monotonic())
        self.requests.append(received)
        subject = str(json.loads(body).get("subject")) if body else ""
        if subject in self._in_flight:
            self.overlaps.append(subject)
        self._in_flight.add(subject)
        try:
            status, delay = self.respond(received)
            await asyncio.sleep(delay)
        finally:
            self._in_flight.discard(subject)
        headers = {"location": "/moved"} if 300 <= status < 400 else {}
        return web.Response(status=status, text="x" * 5000, headers=headers)

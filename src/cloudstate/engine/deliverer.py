"""The deliverer: the worker-loop task that keeps webhooks and callables flowing.

It owns an event loop, kept across ticks, on which a ``Pipeline`` (see
``cloudstate.engine.pipeline``) holds the attempts in flight: it claims due deliveries as slots
free up (overall and per endpoint), POSTs them concurrently through the ``Sender`` seam, and
acknowledges finished ones in small batches. So no database transaction stays open while the
network is slow, and a slow or dead endpoint holds up only its own deliveries. A tick runs the
pipeline until the claimable work is done and nothing is in flight, or for ``TICK_SECONDS``;
sends still in flight then resume at the next tick (the tick reports ``more`` so the loop comes
back at once). A crash before an acknowledgement leaves the claims to expire and be retried:
delivery is at least once, and ``webhook-id`` (the event id) lets receivers drop the repeat.

Callables are synchronous Python functions: each registered name gets one thread of its own,
so a slow callable holds up neither HTTP deliveries nor other callables, and one function is
never called twice at once (as before, it need not be thread-safe against itself).

Endpoints that keep failing are cut off for a while by per-endpoint circuit breakers
(``cloudstate.engine.breaker``), in this process's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

from cloudstate.config import Settings
from cloudstate.domain.deliveries import Outcome
from cloudstate.engine.breaker import Breakers
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.loop import TickResult
from cloudstate.engine.pipeline import Attempted, Health, Pipeline
from cloudstate.exceptions import ValidationError
from cloudstate.store import Store
from cloudstate.store.deliveries import ClaimedDelivery, DeliveryRepository, DeliveryResult
from cloudstate.store.tables import utcnow
from cloudstate.webhooks.envelope import CONTENT_TYPE, DEFAULT_SOURCE, event_body
from cloudstate.webhooks.sender import AiohttpSender, Sender, SendResult
from cloudstate.webhooks.signing import webhook_headers

log = logging.getLogger("cloudstate.engine.deliverer")

USER_AGENT = "cloudstate-webhooks/0.1"
BUSY_HORIZON = timedelta(seconds=2)
TICK_SECONDS = 1.0
CLOSE_GRACE = 2.0  # seconds close() lets in-flight attempts finish before handing them back
GONE = 410
SERVER_ERROR = 500
T = TypeVar("T")


class Deliverer:
    """The ``deliverer`` task of the worker loop.

    ``worker_id`` must be unique among running deliverers (it owns their claims). A deliverer
    is ticked by one thread at a time; it owns an event loop (with its pipeline), created on
    first use, its callables' threads and its sender, all closed by ``close()``.
    """

    name = "deliverer"

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        worker_id: str,
        callables: CallableRegistry,
        sender: Sender | None = None,
        source: str = DEFAULT_SOURCE,
    ) -> None:
        self._store = store
        self._settings = settings
        self._worker_id = worker_id
        self._callables = callables
        self._sender: Sender = (
            sender if sender is not None else AiohttpSender.from_settings(settings)
        )
        self._source = source
        self._breakers = Breakers(
            settings.delivery_breaker_threshold,
            settings.delivery_breaker_cooldown_seconds,
            settings.delivery_breaker_max_cooldown_seconds,
        )
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._pipeline: Pipeline | None = None
        self._threads: dict[str, ThreadPoolExecutor] = {}

    @property
    def breakers(self) -> Breakers:
        return self._breakers

    def interval(self) -> float:
        return 0.25

    def tick(self) -> TickResult:
        """Run the pipeline for up to ``TICK_SECONDS``.

        ``more`` while sends are in flight (they progress only while the task runs) or
        claimable work remains; ``busy`` while sends are in flight or a retry is due within a
        couple of seconds.
        """
        progress = self._run(self._open().run(TICK_SECONDS))
        more = progress.in_flight > 0 or progress.backlog
        busy = progress.in_flight > 0 or (not more and self._busy())
        return TickResult(worked=progress.worked, more=more, busy=busy)

    def close(self) -> None:
        """Finish or hand back what is in flight, then close the sender, the callables'
        threads and the event loop; a later tick opens new ones."""
        loop, self._event_loop = self._event_loop, None
        pipeline, self._pipeline = self._pipeline, None
        threads, self._threads = self._threads, {}
        if loop is None:
            return
        try:
            if pipeline is not None:
                self._shut_down(loop, pipeline)
            loop.run_until_complete(self._sender.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            for pool in threads.values():
                pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _shut_down(loop: asyncio.AbstractEventLoop, pipeline: Pipeline) -> None:
        """Shut the pipeline down; if the store fails meanwhile, the claims simply expire."""
        try:
            loop.run_until_complete(pipeline.shutdown(CLOSE_GRACE))
        except Exception:
            log.exception("deliverer: could not hand back unfinished deliveries")

    def _open(self) -> Pipeline:
        if self._event_loop is None:
            self._event_loop = asyncio.new_event_loop()
        if self._pipeline is None:
            self._pipeline = Pipeline(
                self._store,
                self._settings,
                worker_id=self._worker_id,
                callables=self._callables.names,
                attempt=self._attempt,
                breakers=self._breakers,
            )
        return self._pipeline

    def _run(self, coroutine: Coroutine[object, object, T]) -> T:
        assert self._event_loop is not None
        return self._event_loop.run_until_complete(coroutine)

    def _busy(self) -> bool:
        with self._store.read() as session:
            deliveries = DeliveryRepository(session, self._store.secrets)
            return deliveries.has_work_soon(
                utcnow(), BUSY_HORIZON, callables=self._callables.names()
            )

    # one attempt --------------------------------------------------------------------------

    async def _attempt(self, claimed: ClaimedDelivery) -> Attempted:
        if claimed.kind == "callable":
            loop = asyncio.get_running_loop()
            thread = self._thread_for(claimed.target)
            return Attempted(await loop.run_in_executor(thread, self._call, claimed))
        return await self._post(claimed)

    def _thread_for(self, name: str) -> ThreadPoolExecutor:
        """The one thread that calls the callable ``name``, created on first use."""
        thread = self._threads.get(name)
        if thread is None:
            thread = ThreadPoolExecutor(1, thread_name_prefix="cloudstate-callable")
            self._threads[name] = thread
        return thread

    def _call(self, claimed: ClaimedDelivery) -> DeliveryResult:
        callback = self._callables.get(claimed.target)
        if callback is None:
            return self._result(claimed, Outcome.FAILED, None, "callable is not registered")
        try:
            callback(claimed.event)
        except Exception as exc:
            return self._result(claimed, Outcome.FAILED, None, f"{type(exc).__name__}: {exc}")
        return self._result(claimed, Outcome.DELIVERED, None, "")

    async def _post(self, claimed: ClaimedDelivery) -> Attempted:
        if claimed.secret_error:
            return Attempted(self._result(claimed, Outcome.FAILED, None, claimed.secret_error))
        body = event_body(claimed.event, source=self._source)
        try:
            signed = webhook_headers(claimed.secrets, str(claimed.event.id), int(time.time()), body)
        except ValidationError as exc:
            error = f"signing secret unusable: {exc}"
            return Attempted(self._result(claimed, Outcome.FAILED, None, error))
        headers = {"content-type": CONTENT_TYPE, "user-agent": USER_AGENT, **signed}
        try:
            sent = await self._sender.send(claimed.target, body, headers)
        except Exception as exc:  # a sender must not raise; one that does fails this attempt
            error = f"sender failed: {type(exc).__name__}: {exc}"
            return Attempted(self._result(claimed, Outcome.FAILED, None, error))
        return Attempted(self._judged(claimed, sent), _health(sent))

    def _judged(self, claimed: ClaimedDelivery, sent: SendResult) -> DeliveryResult:
        if sent.ok:
            return self._result(claimed, Outcome.DELIVERED, sent.status_code, "")
        outcome = Outcome.GONE if sent.status_code == GONE else Outcome.FAILED
        return self._result(claimed, outcome, sent.status_code, sent.error or "failed")

    def _result(
        self, claimed: ClaimedDelivery, outcome: Outcome, status_code: int | None, error: str
    ) -> DeliveryResult:
        return DeliveryResult(
            delivery_id=claimed.id,
            worker_id=self._worker_id,
            outcome=outcome,
            status_code=status_code,
            error=error,
            attempted_at=utcnow(),
        )


def _health(sent: SendResult) -> Health:
    """No answer or a 5xx counts against the endpoint; any other answer proves it alive; a
    refusal by the URL policy sent nothing, so it says nothing."""
    if sent.refused:
        return Health.NEUTRAL
    if sent.status_code is None or sent.status_code >= SERVER_ERROR:
        return Health.DOWN
    return Health.UP

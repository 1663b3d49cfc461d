"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cloudstate.api.deps import Context, Reader
from cloudstate.api.routes import responses
from cloudstate.api.schemas import Health, Readiness
from cloudstate.exceptions import StoreError
from cloudstate.store import Store
from cloudstate.store.tables import Account, Delivery, Event, Instance

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive (no database access). Answered on the event loop itself, so it
    never queues behind requests waiting for a thread."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz(ctx: Context) -> JSONResponse:
    """Ready when the database answers and its schema is at the newest migration."""
    try:
        current = ctx.store.database.current_revision()
        head = ctx.store.database.head_revision()
    except (SQLAlchemyError, StoreError):
        body = Readiness(status="not_ready", database=False, migrations="unknown")
        return JSONResponse(body.model_dump(), status_code=503)
    ready = current == head
    body = Readiness(
        status="ready" if ready else "not_ready",
        database=True,
        migrations="current" if ready else f"at {current}, expected {head}",
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **responses()},
)
def metrics(ctx: Context, _: Reader) -> Response:
    """Prometheus text: this process's counters plus fleet state read from the database."""
    state = CollectorRegistry()
    state.register(_StateCollector(ctx.store))
    body = generate_latest(REGISTRY) + generate_latest(state)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class _StateCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> list[Metric]:
        instances = GaugeMetricFamily(
            "cloudstate_instances", "Instances by account and state", labels=["account", "state"]
        )
        deliveries = GaugeMetricFamily(
            "cloudstate_deliveries", "Deliveries by outcome", labels=["status"]
        )
        events = GaugeMetricFamily("cloudstate_events_last_seq", "Sequence of the newest event")
        with self.store.read() as session:
            by_state = session.execute(
                select(Account.name, Instance.state, func.count())
                .join(Account, Account.id == Instance.account_id)
                .group_by(Account.name, Instance.state)
            ).all()
            by_status = session.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            ).all()
            last = session.scalar(select(func.max(Event.seq))) or 0
        for account, state_name, count in by_state:
            instances.add_metric([account, state_name], count)
        for status, count in by_status:
            deliveries.add_metric([status], count)
        events.add_metric([], last)
        return [instances, deliveries, events]

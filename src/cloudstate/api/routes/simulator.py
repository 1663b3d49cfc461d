"""The simulated cloud's console: what it holds, and changes "by someone else".

For playing the outside world against a service on any host (``cloudstate simulator ...``):
stop or terminate instances behind cloudstate's back, take a realm down, cause an outage.
Only ``simulator`` accounts are reachable here; cloudstate's own records are never touched.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cloudstate.api.deps import Context, Reader, Writer
from cloudstate.api.routes import responses
from cloudstate.domain.validation import Labels
from cloudstate.service import simulator
from cloudstate.service.simulator import ExternalAction

router = APIRouter(prefix="/v1/simulator", tags=["simulator"])


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulatedInstanceOut(BaseModel):
    account: str
    provider_id: str
    name: str
    state: str = Field(description="the simulated cloud's raw state")
    uuid: str | None = Field(description="cloudstate's tag; null: not launched by cloudstate")
    realm: str | None
    public_addresses: list[str]
    private_addresses: list[str]
    labels: dict[str, str]


class ExternalActionRequest(_Request):
    action: ExternalAction
    provider_ids: list[str] = Field(default_factory=list, max_length=10_000)
    all: bool = Field(default=False, description="every instance the action applies to")
    account: str | None = Field(default=None, description="only this simulator account's")
    labels: Labels = Field(default_factory=dict, description="only instances with these labels")
    name: str | None = Field(default=None, description="only instances with this name")


class ExternalResultOut(BaseModel):
    provider_id: str
    account: str
    name: str
    ok: bool
    state: str = Field(description="its raw state now (or when refused, still)")
    error: str


class ExternalActionResponse(BaseModel):
    done: int
    refused: int
    results: list[ExternalResultOut]


class RealmChange(_Request):
    available: bool
    reason: str = Field(default="", max_length=1000)


@router.get("/instances", responses=responses(404))
def list_simulated_instances(
    ctx: Context, _: Reader, account: str | None = None
) -> list[SimulatedInstanceOut]:
    """Every instance the simulated cloud holds for each simulator account, as the cloud
    sees it (raw states; instances it already forgot are gone)."""
    return [
        SimulatedInstanceOut(
            account=item.account,
            provider_id=item.provider_id,
            name=item.name,
            state=item.state,
            uuid=item.uuid,
            realm=item.realm,
            public_addresses=list(item.public_addresses),
            private_addresses=list(item.private_addresses),
            labels=item.labels,
        )
        for item in simulator.instances(ctx.store, ctx.settings.home, account)
    ]


@router.post("/instances/actions", responses=responses(404, 413))
def act_on_simulated_instances(
    ctx: Context, _: Writer, body: ExternalActionRequest
) -> ExternalActionResponse:
    """Stop, start, reboot or terminate instances outside cloudstate: by provider id, or every
    one the filters select (``all``, ``account``, ``labels``, ``name``; all given must match).
    cloudstate notices at its next reconcile cycle."""
    selection = simulator.Selection(
        provider_ids=body.provider_ids,
        every=body.all,
        account=body.account,
        labels=body.labels,
        name=body.name,
    )
    results = simulator.act(ctx.store, ctx.settings.home, body.action, selection)
    ctx.wake()
    done = sum(result.ok for result in results)
    return ExternalActionResponse(
        done=done,
        refused=len(results) - done,
        results=[
            ExternalResultOut(
                provider_id=r.provider_id,
                account=r.account,
                name=r.name,
                ok=r.ok,
                state=r.state,
                error=r.error,
            )
            for r in results
        ],
    )


@router.get("/knobs", responses=responses(404, 409))
def get_simulator_knobs(ctx: Context, _: Reader, account: str | None = None) -> dict[str, Any]:
    """The knobs of one simulated cloud (default: account ``simulator``, or the only one)."""
    return simulator.configure(ctx.store, ctx.settings.home, {}, account)


@router.patch("/knobs", responses=responses(404, 409, 413))
def configure_simulator(
    ctx: Context, _: Writer, changes: dict[str, Any], account: str | None = None
) -> dict[str, Any]:
    """Change knobs (e.g. ``{"unreachable": true}``: an outage) for every account on that
    cloud; the knobs now in force. An unknown knob is a 422 naming it."""
    return simulator.configure(ctx.store, ctx.settings.home, changes, account)


@router.put("/realms/{realm}", status_code=204, responses=responses(404, 409, 413))
def set_simulated_realm(
    ctx: Context, _: Writer, realm: str, body: RealmChange, account: str | None = None
) -> None:
    """Make a realm of the simulated cloud available or unavailable (launches there fail)."""
    simulator.set_realm(ctx.store, ctx.settings.home, realm, body.available, body.reason, account)

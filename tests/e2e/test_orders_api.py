"""Launch orders over the live API: listing them (state filter, cursor pages) and cancelling one.

One server serves the module. Orders meant to be cancelled mid-launch go to the account
``slow``: a simulated cloud of its own (its own file, so its knobs touch no other account)
where instances boot in a minute, so they are still ``pending`` when the cancel arrives.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_server import LiveApi

from cloudstate.exceptions import ValidationError
from cloudstate.service import queries
from cloudstate.testing import wait_until

PROBLEM = "application/problem+json"
FINISHED = {"running", "partial", "failed", "rolled_back", "cancelled"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    home = tmp_path_factory.mktemp("orders")
    with LiveApi(home) as live:
        admin = live.client(live.tokens.admin)
        slow = {"path": str(home / "slow-cloud.db"), "fast": True, "boot_seconds": 60.0}
        created = admin.post(
            "/v1/accounts", json={"name": "slow", "provider": "simulator", "config": slow}
        )
        assert created.status_code == 201, created.text
        yield live


@pytest.fixture(scope="module")
def writer(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.write)


@pytest.fixture(scope="module")
def reader(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.read)


def order(count: int, **fields: Any) -> dict[str, Any]:
    defaults = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
    return {**defaults, **fields, "instances": [{"uuid": str(uuid.uuid4())} for _ in range(count)]}


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def finished(client: httpx.Client, order_id: str, timeout: float = 20) -> dict[str, Any]:
    """The order once it is in a final state."""

    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/orders/{order_id}").json()
        return body if body["state"] in FINISHED else None

    return wait_until(done, timeout=timeout, interval=0.05, what=f"order {order_id} finished")


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# --- listing ---------------------------------------------------------------------------------


def test_orders_are_listed_newest_first_in_cursor_pages(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """GET /v1/orders answers the newest orders first, each with its instances and counts; a
    page of ``limit`` carries a cursor that continues exactly after it, and the last page has
    none."""
    ids = [submit(writer, order(2))["id"] for _ in range(3)]
    for order_id in ids:
        finished(reader, order_id)
    first = reader.get("/v1/orders", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert page["items"][0]["counts"] == {"running": 2}
    assert len(page["items"][0]["instances"]) == 2
    assert page["next_cursor"]
    second = reader.get("/v1/orders", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert second["items"][0]["id"] == ids[0]
    walked, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        body = reader.get("/v1/orders", params=params).json()
        walked += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert walked[:3] == ids[::-1]
    assert len(walked) == len(set(walked))


def test_the_state_filter_keeps_only_orders_in_those_states(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """``state`` (repeatable) narrows the list: a failed order is listed under ``failed`` and
    not under ``running``; both states together list both orders."""
    ok = submit(writer, order(1))["id"]
    bad = submit(writer, order(1, image="img-missing"))["id"]
    assert finished(reader, ok)["state"] == "running"
    assert finished(reader, bad)["state"] == "failed"

    def listed(*states: str) -> list[str]:
        response = reader.get("/v1/orders", params=[("state", s) for s in states])
        assert response.status_code == 200, response.text
        assert {item["state"] for item in response.json()["items"]} <= set(states)
        return [item["id"] for item in response.json()["items"]]

    assert bad in listed("failed")
    assert ok not in listed("failed")
    assert ok in listed("running")
    assert {ok, bad} <= set(listed("running", "failed"))


def test_a_bad_state_limit_or_cursor_is_a_422_naming_it(reader: httpx.Client) -> None:
    """An unknown state, a limit out of 1..1000 and a cursor the API did not issue (garbled,
    or naming no order) are 422s naming the parameter (a repeated one by its position)."""
    nowhere = "A" * 22  # decodes to a UUID, but no order has it
    for params, field in (
        ({"state": "sleeping"}, "state.0"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "not*a*cursor"}, "cursor"),
        ({"cursor": nowhere}, "cursor"),
    ):
        body = problem(reader.get("/v1/orders", params=params), 422)
        assert {error["field"] for error in body["errors"]} == {field}, params


def test_the_listing_query_itself_checks_states_and_limits(api: LiveApi) -> None:
    """``queries.list_orders`` (what the embedded API would call) refuses an unknown state on
    ``state`` and a limit outside 1..1000 on ``limit``, before reading anything."""
    with pytest.raises(ValidationError) as bad_state:
        queries.list_orders(api.cs.store, states=["sleeping"])
    assert [error.field for error in bad_state.value.errors] == ["state"]
    with pytest.raises(ValidationError) as bad_limit:
        queries.list_orders(api.cs.store, limit=1001)
    assert [error.field for error in bad_limit.value.errors] == ["limit"]


# --- cancel ----------------------------------------------------------------------------------


def test_cancelling_an_order_mid_launch_destroys_everything_and_ends_cancelled(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """An order still launching (its instances pending on a slow cloud) is cancelled: 202 with
    the order ``rolling_back``; then every instance is terminated, the order ends
    ``cancelled`` with its reason, and its events say so."""
    accepted = submit(writer, order(3, account="slow"))
    order_id = accepted["id"]

    def launching() -> bool:
        body = reader.get(f"/v1/orders/{order_id}").json()
        return body["state"] == "launching" and body["counts"] == {"pending": 3}

    wait_until(launching, timeout=15, interval=0.05, what="three instances pending")
    response = writer.post(f"/v1/orders/{order_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "rolling_back"
    assert response.json()["reason"] == "cancelled by request"

    done = finished(reader, order_id)
    assert done["state"] == "cancelled"
    assert done["reason"] == "cancelled by request"
    assert done["finished_at"] is not None
    assert done["counts"] == {"terminated": 3}
    assert all(i["operation"] is None for i in done["instances"])
    events = reader.get("/v1/events", params={"order": order_id, "limit": 1000}).json()["items"]
    changes = [e["data"]["state"] for e in events if e["type"] == "order.state_changed"]
    assert changes[-2:] == ["rolling_back", "cancelled"]
    assert events[-1]["type"] == "order.completed"
    assert events[-1]["data"]["state"] == "cancelled"


def test_cancelling_a_finished_order_is_a_409_naming_its_state(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """A finished order cannot be cancelled: 409 problem+json saying which state it is in;
    the order is left as it was."""
    order_id = submit(writer, order(1))["id"]
    assert finished(reader, order_id)["state"] == "running"
    refused = problem(writer.post(f"/v1/orders/{order_id}/cancel"), 409)
    assert f"order {order_id} is running" in refused["detail"]
    assert reader.get(f"/v1/orders/{order_id}").json()["state"] == "running"


def test_cancelling_an_unknown_order_is_a_404(writer: httpx.Client) -> None:
    """An id that names no order: 404 naming it."""
    unknown = uuid.uuid4()
    body = problem(writer.post(f"/v1/orders/{unknown}/cancel"), 404)
    assert body["detail"] == f"order {unknown} not found"


def test_a_read_only_token_cannot_cancel(writer: httpx.Client, reader: httpx.Client) -> None:
    """Cancelling needs the write scope: a read token gets 403 and the order goes on."""
    order_id = submit(writer, order(1, account="slow"))["id"]
    body = problem(reader.post(f"/v1/orders/{order_id}/cancel"), 403)
    assert body["detail"] == "this token lacks the write scope"
    assert reader.get(f"/v1/orders/{order_id}").json()["state"] in ("accepted", "launching")
    assert writer.post(f"/v1/orders/{order_id}/cancel").status_code == 202  # tidy up
    assert finished(reader, order_id)["state"] == "cancelled"


def test_the_openapi_document_declares_both_order_operations(reader: httpx.Client) -> None:
    """GET /v1/orders answers an OrderPage; POST /v1/orders/{order_id}/cancel declares 202,
    404 and 409 (problem+json)."""
    doc = reader.get("/openapi.json").json()
    listing = doc["paths"]["/v1/orders"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderPage"
    }
    cancel = doc["paths"]["/v1/orders/{order_id}/cancel"]["post"]["responses"]
    assert {"202", "404", "409"} <= cancel.keys()
    assert PROBLEM in cancel["409"]["content"]

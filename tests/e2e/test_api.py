"""The REST API over real HTTP: uvicorn on a free loopback port, an embedded engine behind it.

One server serves the module (``api``); its workers really launch instances on the simulator, so
orders, actions and events are the engine's own. Every response is noted, and the last test
checks what the whole module saw: every operation of the OpenAPI document ran, every error status
an operation gave is declared in the document, every error was problem+json, and none was a 500.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import LiveApi, Seen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from cloudstate.service.retention import prune_events
from cloudstate.store.tables import utcnow
from cloudstate.testing import wait_until

PROBLEM = "application/problem+json"
MIB = 1024 * 1024
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
RANK = {None: 0, "read": 1, "write": 2, "admin": 3}

SCOPE: dict[tuple[str, str], str | None] = {
    ("POST", "/v1/orders"): "write",
    ("GET", "/v1/orders"): "read",
    ("GET", "/v1/orders/{order_id}"): "read",
    ("POST", "/v1/orders/{order_id}/cancel"): "write",
    ("GET", "/v1/instances"): "read",
    ("POST", "/v1/instances/actions"): "write",
    ("GET", "/v1/instances/{instance_uuid}"): "read",
    ("DELETE", "/v1/instances/{instance_uuid}"): "write",
    ("POST", "/v1/instances/{instance_uuid}/actions"): "write",
    ("GET", "/v1/accounts"): "read",
    ("POST", "/v1/accounts"): "admin",
    ("GET", "/v1/accounts/{name}"): "read",
    ("PATCH", "/v1/accounts/{name}"): "admin",
    ("DELETE", "/v1/accounts/{name}"): "admin",
    ("POST", "/v1/accounts/{name}/verify"): "admin",
    ("GET", "/v1/subscriptions"): "read",
    ("POST", "/v1/subscriptions"): "write",
    ("GET", "/v1/subscriptions/{subscription_id}"): "read",
    ("PATCH", "/v1/subscriptions/{subscription_id}"): "write",
    ("DELETE", "/v1/subscriptions/{subscription_id}"): "write",
    ("POST", "/v1/subscriptions/{subscription_id}/enable"): "write",
    ("POST", "/v1/subscriptions/{subscription_id}/rotate-secret"): "write",
    ("GET", "/v1/subscriptions/{subscription_id}/deliveries"): "read",
    ("POST", "/v1/subscriptions/{subscription_id}/replay"): "write",
    ("POST", "/v1/deliveries/{delivery_id}/retry"): "write",
    ("GET", "/v1/events"): "read",
    ("GET", "/v1/events/stream"): "read",
    ("GET", "/v1/realms"): "read",
    ("GET", "/v1/workers"): "read",
    ("GET", "/v1/simulator/instances"): "read",
    ("POST", "/v1/simulator/instances/actions"): "write",
    ("GET", "/v1/simulator/knobs"): "read",
    ("PATCH", "/v1/simulator/knobs"): "write",
    ("PUT", "/v1/simulator/realms/{realm}"): "write",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{name}"): "admin",
    ("GET", "/metrics"): "read",
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
}
"""Who may call what: the scope each operation needs (None: no token at all)."""


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def seen() -> list[Seen]:
    """Every response any client of this module received, in order."""
    return []


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, seen: list[Seen]) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("api"), seen) as live:
        yield live


@pytest.fixture(scope="module")
def admin(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.admin)


@pytest.fixture(scope="module")
def writer(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.write)


@pytest.fixture(scope="module")
def reader(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.read)


@pytest.fixture(scope="module")
def fleet(writer: httpx.Client) -> tuple[str, list[str]]:
    """25 running instances in one order; even ones labelled role=web, odd ones role=db."""
    labels = [{"role": "web" if i % 2 == 0 else "db", "env": "test"} for i in range(25)]
    order_id, uuids = launch(writer, labels)
    wait_for(writer, uuids, "running")
    return order_id, uuids


def launch(client: httpx.Client, labels: list[dict[str, str]]) -> tuple[str, list[str]]:
    """Order one instance per entry of ``labels``; returns the order id and the uuids."""
    uuids = [str(uuid.uuid4()) for _ in labels]
    body = order([{"uuid": u, "labels": lab} for u, lab in zip(uuids, labels, strict=True)])
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"], uuids


def order(instances: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    defaults = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
    return {**defaults, **fields, "instances": instances}


def wait_for(client: httpx.Client, uuids: list[str], state: str, timeout: float = 15) -> None:
    """Until every instance is in ``state`` with no operation in flight."""

    def settled() -> bool:
        views = [client.get(f"/v1/instances/{u}").json() for u in uuids]
        return all(v["state"] == state and v["operation"] is None for v in views)

    wait_until(settled, timeout=timeout, interval=0.05, what=f"{len(uuids)} {state}")


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 body of an error response, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    return body


def bad_fields(response: httpx.Response) -> set[str]:
    """The fields a 422 names, one per error."""
    return {error["field"] for error in problem(response, 422)["errors"]}


def sse_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    """Read ``count`` events (blocks with an ``id:``) from a Server-Sent Events response."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "id" in current:
                events.append(current)
                if len(events) == count:
                    return events
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    raise AssertionError(f"the stream ended after {len(events)} of {count} events")


# --- authentication and scopes ---------------------------------------------------------------


def test_the_scope_table_names_every_operation_of_the_document(reader: httpx.Client) -> None:
    """Every operation in /openapi.json has an expected scope here, and nothing else does."""
    assert operations(reader.get("/openapi.json").json()) == set(SCOPE)


@pytest.fixture(scope="module")
def by_token(api: LiveApi) -> dict[str, httpx.Client]:
    """A client per kind of caller: anonymous, revoked, unknown, and one per scope."""
    tokens = api.tokens
    return {
        "none": api.client(),
        "revoked": api.client(tokens.revoked),
        "unknown": api.client("cst_not-a-token"),
        **{scope: api.client(getattr(tokens, scope)) for scope in ("read", "write", "admin")},
    }


@pytest.mark.parametrize(
    ("method", "template"), sorted(SCOPE), ids=[f"{m} {t}" for m, t in sorted(SCOPE)]
)
def test_each_operation_refuses_missing_revoked_and_insufficient_tokens(
    by_token: dict[str, httpx.Client], method: str, template: str
) -> None:
    """No token, a revoked or unknown one: 401 (with ``WWW-Authenticate: Bearer``); a token
    below the operation's scope: 403; the right scope gets past both. /healthz and /readyz need
    no token at all."""
    needed = SCOPE[method, template]
    path = concrete(template)
    if needed is None:
        assert by_token["none"].request(method, path).status_code == 200
        return
    for caller in ("none", "revoked", "unknown"):
        refused = problem(call(by_token[caller], method, path), 401)
        assert refused["detail"] == (
            "a bearer token is required" if caller == "none" else "the token is unknown or revoked"
        )
    assert call(by_token["none"], method, path).headers["www-authenticate"] == "Bearer"
    for scope in ("read", "write", "admin"):
        response = call(by_token[scope], method, path)
        if RANK[scope] < RANK[needed]:
            assert problem(response, 403)["detail"] == f"this token lacks the {needed} scope"
        else:
            assert response.status_code not in (401, 403), response.text


def test_a_non_bearer_authorization_header_is_a_401(api: LiveApi) -> None:
    """``Authorization: Basic ...`` is no token at all."""
    client = api.client()
    response = client.get("/v1/instances", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert problem(response, 401)["detail"] == "a bearer token is required"


def concrete(template: str) -> str:
    """A path for ``template`` whose ids name nothing (uuids for uuid ids, else a name)."""
    path = re.sub(r"\{(order_id|instance_uuid|subscription_id)\}", str(uuid.uuid4()), template)
    path = path.replace("{delivery_id}", "987654321")
    return path.replace("{name}", "no-such-thing")


def call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    """One harmless request: an empty JSON object as the body, and for the event stream a
    ``Last-Event-ID`` it refuses (422) once past authentication, so nothing stays open."""
    body = {} if method in ("POST", "PATCH") else None
    headers = {"Last-Event-ID": "not-a-number"} if path.endswith("/stream") else {}
    return client.request(method, path, json=body, headers=headers)


# --- orders ----------------------------------------------------------------------------------


def test_an_order_is_accepted_with_its_instances_and_can_be_read_back(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """POST /v1/orders answers 202 with the order and its instances (``new``); GET returns the
    same order; the workers then launch every instance to ``running``."""
    uuids = [str(uuid.uuid4()) for _ in range(2)]
    body = order([{"uuid": uuids[0], "name": "web-1"}, {"uuid": uuids[1]}], labels={"app": "x"})
    response = writer.post("/v1/orders", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["state"] == "accepted"
    assert created["policy"] == "partial"
    assert [i["uuid"] for i in created["instances"]] == uuids
    assert [i["state"] for i in created["instances"]] == ["new", "new"]
    assert [i["name"] for i in created["instances"]] == ["web-1", f"cs-{uuids[1][:8]}"]
    assert all(i["labels"] == {"app": "x"} for i in created["instances"])
    read = reader.get(f"/v1/orders/{created['id']}")
    assert read.status_code == 200
    assert read.json()["id"] == created["id"]
    assert [i["uuid"] for i in read.json()["instances"]] == uuids
    wait_for(reader, uuids, "running")


def test_an_unknown_order_is_a_404(reader: httpx.Client) -> None:
    """GET /v1/orders/<unknown> → 404 naming it; a malformed id → 422 naming the parameter."""
    unknown = uuid.uuid4()
    assert problem(reader.get(f"/v1/orders/{unknown}"), 404)["detail"] == (
        f"order {unknown} not found"
    )
    assert bad_fields(reader.get("/v1/orders/not-a-uuid")) == {"order_id"}


def test_an_order_with_several_bad_fields_lists_each_of_them(writer: httpx.Client) -> None:
    """One 422 names every field that fails to parse (a type, two bounds, an unknown field)
    and, with them, what the order lacks (no account or profile for the instance)."""
    body = {"image": "", "memory": -1, "bogus": 1, "instances": [{"uuid": "x"}]}
    assert bad_fields(writer.post("/v1/orders", json=body)) == {
        "image",
        "memory",
        "bogus",
        "instances.0.uuid",
        "instances.0.account",
        "instances.0.hardware_profile",
    }


def test_an_order_lists_every_missing_field_and_repeated_uuid(writer: httpx.Client) -> None:
    """Required fields given neither on the order nor on the instance, and a UUID repeated
    within the order: one 422 names each, per instance."""
    repeated = str(uuid.uuid4())
    body = {"account": "simulator", "instances": [{"uuid": repeated}, {"uuid": repeated}]}
    assert bad_fields(writer.post("/v1/orders", json=body)) == {
        "instances.0.image",
        "instances.0.hardware_profile",
        "instances.1.image",
        "instances.1.hardware_profile",
        "instances.1.uuid",
    }


def test_one_typo_does_not_hide_the_missing_fields_of_an_order(writer: httpx.Client) -> None:
    """A bad ``memory`` and an image given nowhere are reported together (as ``resolve_order``
    promises: "one typo does not hide the other problems")."""
    body = {"account": "simulator", "hardware_profile": "small", "memory": -1}
    body["instances"] = [{"uuid": str(uuid.uuid4())}]
    assert bad_fields(writer.post("/v1/orders", json=body)) == {"memory", "instances.0.image"}


def test_an_order_for_an_unknown_account_names_the_instance_field(writer: httpx.Client) -> None:
    """The account is checked per instance: 422 on ``instances.0.account``; nothing stored."""
    instance = str(uuid.uuid4())
    response = writer.post("/v1/orders", json=order([{"uuid": instance}], account="nope"))
    assert problem(response, 422)["errors"] == [
        {"field": "instances.0.account", "message": "no account named 'nope'"}
    ]
    assert writer.get(f"/v1/instances/{instance}").status_code == 404


def test_an_instance_uuid_already_stored_is_a_409(writer: httpx.Client) -> None:
    """The caller's UUID is the idempotency key: ordering it a second time is a conflict."""
    _, [instance] = launch(writer, [{}])
    again = writer.post("/v1/orders", json=order([{"uuid": instance}]))
    assert problem(again, 409)["detail"] == f"instance {instance} already exists"


def test_a_body_over_one_mebibyte_is_a_413(writer: httpx.Client) -> None:
    """Over 1 MiB is refused with 413 problem+json, declared or streamed without a length."""
    big = order([{"uuid": str(uuid.uuid4())}], description="x" * MIB)
    declared = writer.post("/v1/orders", content=json.dumps(big).encode(), headers=JSON_TYPE)
    assert problem(declared, 413)["detail"] == f"the limit is {MIB} bytes"

    def chunks() -> Iterator[bytes]:
        for _ in range(11):
            yield b" " * 100_000

    streamed = writer.post("/v1/orders", content=chunks(), headers=JSON_TYPE)
    assert "content-length" not in streamed.request.headers
    assert problem(streamed, 413)["detail"] == f"the limit is {MIB} bytes"


JSON_TYPE = {"Content-Type": "application/json"}


def test_malformed_json_and_a_wrong_content_type_are_4xx_problems_not_500(
    writer: httpx.Client,
) -> None:
    """Bytes that are not JSON: 422 on ``body``; a JSON value that is not an object, or a body
    sent as text/plain: 422 on ``body`` too."""
    broken = writer.post("/v1/orders", content=b'{"instances": [', headers=JSON_TYPE)
    assert bad_fields(broken) == {"body"}
    assert bad_fields(writer.post("/v1/orders", json=[1, 2])) == {"body"}
    text = writer.post("/v1/orders", content=b"hello", headers={"Content-Type": "text/plain"})
    assert bad_fields(text) == {"body"}
    assert bad_fields(writer.post("/v1/orders")) == {"body"}


def test_unknown_routes_and_methods_are_problems_too(reader: httpx.Client) -> None:
    """A path the API lacks: 404; a method a path lacks: 405; both problem+json."""
    assert problem(reader.get("/v1/nothing-here"), 404)["title"] == "Not found"
    assert problem(reader.put("/v1/orders", json={}), 405)["title"] == "Method not allowed"


# --- instances -------------------------------------------------------------------------------


def test_instances_page_with_a_cursor_each_exactly_once(
    reader: httpx.Client, fleet: tuple[str, list[str]]
) -> None:
    """25 instances at limit=10: pages of 10, 10 and 5, the last with no ``next_cursor``; every
    instance appears exactly once."""
    order_id, uuids = fleet
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"order": order_id, "limit": 10, **({"cursor": cursor} if cursor else {})}
        page = reader.get("/v1/instances", params=params).json()
        pages.append([item["uuid"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [10, 10, 5]
    listed = [u for page in pages for u in page]
    assert sorted(listed) == sorted(uuids)


def test_instances_filter_by_state_account_order_and_labels(
    reader: httpx.Client, fleet: tuple[str, list[str]]
) -> None:
    """Filters combine with AND; labels are ``key=value`` and may repeat."""
    order_id, uuids = fleet

    def listed(**params: Any) -> set[str]:
        response = reader.get("/v1/instances", params={"order": order_id, **params})
        assert response.status_code == 200, response.text
        return {item["uuid"] for item in response.json()["items"]}

    web = {u for i, u in enumerate(uuids) if i % 2 == 0}
    assert listed() == set(uuids)
    assert listed(state="running") == set(uuids)
    assert listed(state=["stopped", "pending"]) == set()
    assert listed(account="simulator") == set(uuids)
    assert listed(account="nope") == set()
    assert listed(label="role=web") == web
    assert listed(label=["role=db", "env=test"]) == set(uuids) - web
    assert listed(label=["role=web", "env=prod"]) == set()
    everything = reader.get("/v1/instances", params={"label": "role=web", "limit": 1000})
    assert web <= {item["uuid"] for item in everything.json()["items"]}


def test_bad_listing_parameters_are_422s_naming_them(reader: httpx.Client) -> None:
    """A cursor this API did not issue names ``cursor``; a label without '=' names ``label``;
    an unknown state or an out-of-range limit name their query parameter."""
    assert bad_fields(reader.get("/v1/instances", params={"cursor": "!!!"})) == {"cursor"}
    assert bad_fields(reader.get("/v1/instances", params={"cursor": "abc"})) == {"cursor"}
    assert bad_fields(reader.get("/v1/instances", params={"label": "noeq"})) == {"label"}
    assert bad_fields(reader.get("/v1/instances", params={"state": "melted"})) == {"state.0"}
    assert bad_fields(reader.get("/v1/instances", params={"limit": 0})) == {"limit"}


def test_one_instance_reads_back_and_an_unknown_one_is_a_404(
    reader: httpx.Client, fleet: tuple[str, list[str]]
) -> None:
    """GET one: its fields as launched; unknown: 404; not a UUID: 422."""
    order_id, uuids = fleet
    view = reader.get(f"/v1/instances/{uuids[0]}").json()
    assert (view["uuid"], view["order_id"], view["account"]) == (uuids[0], order_id, "simulator")
    assert (view["state"], view["image"], view["hardware_profile"]) == (
        "running",
        "img-basic",
        "small",
    )
    assert view["labels"] == {"role": "web", "env": "test"}
    assert view["allowed_actions"] == ["stop", "reboot", "destroy"]
    assert view["provider_id"]
    unknown = uuid.uuid4()
    assert problem(reader.get(f"/v1/instances/{unknown}"), 404)["detail"] == (
        f"instance {unknown} not found"
    )
    assert bad_fields(reader.get("/v1/instances/nope")) == {"instance_uuid"}


def test_an_action_answers_202_then_200_with_wait_and_409_when_the_state_forbids_it(
    writer: httpx.Client,
) -> None:
    """Stop: 202 at once with the operation in flight; stopping again: 409 with the actions a
    stopped instance allows; start with ``wait``: 200 once running; unknown instance: 404."""
    _, [instance] = launch(writer, [{}])
    wait_for(writer, [instance], "running")
    path = f"/v1/instances/{instance}/actions"

    stop = writer.post(path, json={"action": "stop"})
    assert stop.status_code == 202, stop.text
    assert stop.json()["result"]["accepted"] is True
    assert stop.json()["result"]["operation_id"]
    assert stop.json()["instance"]["operation"] == "stopping"
    wait_for(writer, [instance], "stopped")

    refused = problem(writer.post(path, json={"action": "stop"}), 409)
    assert refused["allowed_actions"] == ["start", "destroy"]
    assert refused["title"] == "Action not allowed"

    start = writer.post(path, json={"action": "start", "wait": True, "timeout": 20})
    assert start.status_code == 200, start.text
    assert (start.json()["instance"]["state"], start.json()["instance"]["operation"]) == (
        "running",
        None,
    )
    unknown = writer.post(f"/v1/instances/{uuid.uuid4()}/actions", json={"action": "stop"})
    assert problem(unknown, 404)["title"] == "Not found"
    assert bad_fields(writer.post(path, json={"action": "explode", "timeout": 0})) == {
        "action",
        "timeout",
    }


def test_waiting_past_the_timeout_is_a_504(writer: httpx.Client) -> None:
    """``wait`` with a timeout the action cannot meet: 504; the action itself still happens."""
    _, [instance] = launch(writer, [{}])
    wait_for(writer, [instance], "running")
    path = f"/v1/instances/{instance}/actions"
    late = writer.post(path, json={"action": "stop", "wait": True, "timeout": 0.001})
    assert problem(late, 504)["title"] == "Timed out waiting"
    wait_for(writer, [instance], "stopped")


def test_delete_destroys_asynchronously_until_terminated(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """DELETE: 202 with ``destroying`` in flight, then ``terminated``; deleting a terminated
    instance is a 409 that allows nothing; an unknown one is a 404."""
    _, [instance] = launch(writer, [{}])
    wait_for(writer, [instance], "running")
    response = writer.delete(f"/v1/instances/{instance}")
    assert response.status_code == 202, response.text
    assert response.json()["result"]["accepted"] is True
    assert response.json()["instance"]["operation"] == "destroying"
    wait_for(reader, [instance], "terminated")
    assert problem(writer.delete(f"/v1/instances/{instance}"), 409)["allowed_actions"] == []
    assert problem(writer.delete(f"/v1/instances/{uuid.uuid4()}"), 404)["title"] == "Not found"


def test_a_bulk_action_reports_each_instance_and_refusals_do_not_block_the_others(
    writer: httpx.Client,
) -> None:
    """Reboot on two running, one stopped and one unknown instance: 200 with 2 accepted and
    2 refused, one result per instance in the request's order, each refusal with its reason."""
    _, uuids = launch(writer, [{}, {}, {}])
    wait_for(writer, uuids, "running")
    stopped = uuids[2]
    stop = writer.post(f"/v1/instances/{stopped}/actions", json={"action": "stop", "wait": True})
    assert stop.status_code == 200, stop.text
    unknown = str(uuid.uuid4())

    response = writer.post(
        "/v1/instances/actions", json={"action": "reboot", "uuids": [*uuids, unknown]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (2, 2)
    results = body["results"]
    assert [r["uuid"] for r in results] == [*uuids, unknown]
    assert [r["accepted"] for r in results] == [True, True, False, False]
    assert all(r["operation_id"] for r in results[:2])
    assert results[2]["error"] == (
        f"cannot reboot: instance {stopped} is stopped; allowed actions: start, destroy"
    )
    assert results[2]["allowed_actions"] == ["start", "destroy"]
    assert results[3]["error"] == f"instance {unknown} not found"
    wait_for(writer, uuids[:2], "running")
    assert bad_fields(writer.post("/v1/instances/actions", json={"action": "stop"})) == {"uuids"}


# --- accounts --------------------------------------------------------------------------------


def test_accounts_are_managed_by_admins_and_credentials_never_come_back(
    api: LiveApi, admin: httpx.Client, writer: httpx.Client, reader: httpx.Client
) -> None:
    """Create (201), get, list, patch and delete (204) an account; the credentials' values
    appear in no response body at all; a write token may not create one (403)."""
    secret, rotated = "s3cret-" + uuid.uuid4().hex, "r0tated-" + uuid.uuid4().hex
    body = {
        "name": "second",
        "provider": "simulator",
        "config": {"fast": True},
        "credentials": {"key": secret},
    }
    assert problem(writer.post("/v1/accounts", json=body), 403)["title"] == "Forbidden"
    created = admin.post("/v1/accounts", json=body)
    assert created.status_code == 201, created.text
    assert created.json() == {
        **created.json(),
        "name": "second",
        "provider": "simulator",
        "config": {"fast": True},
        "has_credentials": True,
    }
    patched = admin.patch("/v1/accounts/second", json={"credentials": {"key": rotated}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["has_credentials"] is True
    bodies = [
        created.text,
        patched.text,
        reader.get("/v1/accounts/second").text,
        reader.get("/v1/accounts").text,
        reader.get("/v1/events", params={"account": "second", "limit": 1000}).text,
        reader.get("/metrics").text,
    ]
    assert reader.get("/v1/accounts/second").json()["name"] == "second"
    assert "second" in {a["name"] for a in reader.get("/v1/accounts").json()}
    assert not [text for text in bodies if secret in text or rotated in text]

    assert admin.delete("/v1/accounts/second").status_code == 204
    assert problem(reader.get("/v1/accounts/second"), 404)["detail"] == ("account second not found")


def test_account_mistakes_are_clear_4xx_problems(admin: httpx.Client) -> None:
    """Unknown provider: 422 on ``provider``; a name taken: 409; an unknown driver option: 422
    naming it; an unknown account: 404; removing an account with live instances: refused."""
    unknown = admin.post("/v1/accounts", json={"name": "x1", "provider": "nope"})
    assert bad_fields(unknown) == {"provider"}
    taken = admin.post("/v1/accounts", json={"name": "simulator", "provider": "simulator"})
    assert problem(taken, 409)["detail"] == "account simulator already exists"
    option = admin.patch("/v1/accounts/simulator", json={"config": {"bogus": 1}})
    assert bad_fields(option) == {"bogus"}
    assert problem(admin.patch("/v1/accounts/nope", json={}), 404)["title"] == "Not found"
    assert problem(admin.delete("/v1/accounts/nope"), 404)["title"] == "Not found"
    _, [live] = launch(admin, [{}])
    refused = admin.delete("/v1/accounts/simulator")
    assert refused.status_code in (409, 422), refused.text
    assert "destroy them first" in problem(refused, refused.status_code)["detail"]
    assert admin.get(f"/v1/instances/{live}").json()["account"] == "simulator"


# --- subscriptions ---------------------------------------------------------------------------


def test_a_subscription_secret_is_shown_once_and_it_can_be_changed_and_removed(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """Create: 201 with a generated ``whsec_`` secret; GET and list never return it; PATCH
    disables, re-enables and refilters it; DELETE: 204, then 404."""
    nobody = str(uuid.uuid4())  # filters that match no event: nothing is ever delivered
    body = {"url": "http://127.0.0.1:9/hook", "filters": {"instances": [nobody]}}
    created = writer.post("/v1/subscriptions", json=body)
    assert created.status_code == 201, created.text
    subscription = created.json()
    secret = subscription["secret"]
    assert secret.startswith("whsec_")
    assert subscription["filters"]["instances"] == [nobody]
    path = f"/v1/subscriptions/{subscription['id']}"

    one, every = reader.get(path), reader.get("/v1/subscriptions")
    assert one.json()["secret"] is None
    assert subscription["id"] in {s["id"] for s in every.json()}
    assert secret not in one.text
    assert secret not in every.text

    disabled = writer.patch(path, json={"enabled": False})
    assert disabled.json()["enabled"] is False
    enabled = writer.patch(path, json={"enabled": True, "description": "again"})
    assert (enabled.json()["enabled"], enabled.json()["description"]) == (True, "again")
    filters = {"instances": [nobody], "types": ["instance.created"]}
    refiltered = writer.patch(path, json={"filters": filters})
    assert refiltered.json()["filters"]["types"] == ["instance.created"]
    assert secret not in disabled.text + enabled.text + refiltered.text

    assert writer.delete(path).status_code == 204
    assert problem(reader.get(path), 404)["title"] == "Not found"
    assert problem(writer.delete(path), 404)["title"] == "Not found"
    assert problem(writer.patch(path, json={"enabled": True}), 404)["title"] == "Not found"


def test_a_subscription_url_must_be_http_with_a_host(writer: httpx.Client) -> None:
    """ftp://, a bare word or a scheme without a host: 422 naming ``url``, on create and on
    update."""
    for url in ("ftp://example.com/h", "hook", "http://"):
        assert bad_fields(writer.post("/v1/subscriptions", json={"url": url})) == {"url"}
    body = {"url": "https://127.0.0.1:9/h", "filters": {"instances": [str(uuid.uuid4())]}}
    created = writer.post("/v1/subscriptions", json=body).json()
    path = f"/v1/subscriptions/{created['id']}"
    assert bad_fields(writer.patch(path, json={"url": "file:///etc/passwd"})) == {"url"}
    assert writer.delete(path).status_code == 204


# --- events ----------------------------------------------------------------------------------


def test_events_page_after_a_cursor_in_sequence(
    reader: httpx.Client, fleet: tuple[str, list[str]]
) -> None:
    """Pages of 7 after ``next_after`` read the log in strictly increasing ``seq`` with no gap
    or repeat against one big page; past the end: no items, ``next_after`` unchanged."""
    everything = reader.get("/v1/events", params={"limit": 1000}).json()["items"]
    assert len(everything) > 25
    paged: list[dict[str, Any]] = []
    after = 0
    while len(paged) < len(everything):
        page = reader.get("/v1/events", params={"after": after, "limit": 7}).json()
        assert page["items"], "the log ended early"
        assert page["next_after"] == page["items"][-1]["seq"]
        paged += page["items"]
        after = page["next_after"]
    assert [e["seq"] for e in paged[: len(everything)]] == [e["seq"] for e in everything]
    seqs = [e["seq"] for e in paged]
    assert seqs == sorted(set(seqs))
    beyond = reader.get("/v1/events", params={"after": 10**12}).json()
    assert (beyond["items"], beyond["next_after"]) == ([], 10**12)
    assert beyond["last_seq"] >= max(seqs)  # the newest event, whatever the cursor


def test_events_filter_by_type_instance_order_account_and_label(
    reader: httpx.Client, fleet: tuple[str, list[str]]
) -> None:
    """The filters of subscriptions apply to the log: each event listed matches all of them."""
    order_id, uuids = fleet
    web = {u for i, u in enumerate(uuids) if i % 2 == 0}

    def events(**params: Any) -> list[dict[str, Any]]:
        response = reader.get("/v1/events", params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    created = events(type="instance.created", order=order_id)
    assert sorted(e["instance_uuid"] for e in created) == sorted(uuids)
    assert {e["type"] for e in created} == {"instance.created"}
    mine = events(instance=uuids[1])
    assert {e["instance_uuid"] for e in mine} == {uuids[1]}
    assert [e["instance_seq"] for e in mine] == list(range(1, len(mine) + 1))
    assert len(events(type="instance.created", order=order_id, account="simulator")) == 25
    assert events(type="instance.created", order=order_id, account="nope") == []
    labelled = events(type="instance.created", order=order_id, label="role=web")
    assert {e["instance_uuid"] for e in labelled} == web
    assert bad_fields(reader.get("/v1/events", params={"type": "bogus"})) == {"type.0"}
    assert bad_fields(reader.get("/v1/events", params={"after": -1})) == {"after"}
    assert bad_fields(reader.get("/v1/events", params={"after": 2**63})) == {"after"}
    assert bad_fields(reader.get("/v1/events", params={"label": "x"})) == {"label"}


def test_the_event_stream_resumes_from_last_event_id_with_no_gap_and_no_duplicate(
    writer: httpx.Client, reader: httpx.Client
) -> None:
    """Read two filtered events, disconnect, let more commit, reconnect with ``Last-Event-ID``:
    the stream goes on with exactly the next events of the filtered list, each once; every
    ``id:`` is the event's ``seq`` and each ``data:`` is its CloudEvent."""
    order_id, uuids = launch(writer, [{}, {}])
    wait_for(writer, uuids, "running")
    params = {"type": "instance.state_changed", "order": order_id}

    with reader.stream("GET", "/v1/events/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = sse_events(response, 2)
    last = int(first[-1]["id"])

    stopped = writer.post(
        f"/v1/instances/{uuids[0]}/actions", json={"action": "stop", "wait": True}
    )
    assert stopped.status_code == 200, stopped.text
    listed = reader.get("/v1/events", params={**params, "limit": 1000}).json()["items"]
    following = [e for e in listed if e["seq"] > last]
    assert len(following) >= 3  # two more boots, and at least the stop

    with reader.stream(
        "GET", "/v1/events/stream", params=params, headers={"Last-Event-ID": str(last)}
    ) as response:
        assert response.status_code == 200
        rest = sse_events(response, len(following))

    streamed = first + rest
    assert [int(e["id"]) for e in streamed] == [e["seq"] for e in listed]
    for sse, item in zip(streamed, listed, strict=True):
        envelope = json.loads(sse["data"])
        assert sse["event"] == item["type"] == envelope["type"] == "instance.state_changed"
        assert (envelope["id"], envelope["data"]["cursor"]) == (item["id"], item["seq"])


def test_a_last_event_id_that_is_not_a_sequence_is_a_422(reader: httpx.Client) -> None:
    """The header must be a sequence number the database can hold; otherwise 422 naming it
    (``\\xb2`` is '²' in Latin-1, which ``str.isdigit`` accepts and ``int`` does not)."""
    for value in (b"abc", b"-1", b"\xb2", str(2**63).encode()):
        response = reader.get("/v1/events/stream", headers={"Last-Event-ID": value})
        assert bad_fields(response) == {"Last-Event-ID"}, value


def test_a_cursor_older_than_the_retained_events_is_410_gone(
    tmp_path: Path, seen: list[Seen]
) -> None:
    """Retention is made to happen honestly: ``prune_events`` (the sweeper's own function)
    runs on the server's store with a cut-off of now, which drops every event but the newest.
    A cursor before the first retained seq - 1 then gets 410 on the list and the stream; the
    cursor just before it, or starting over from 0, still reads."""
    with LiveApi(tmp_path / "home", seen) as api:
        writer = api.client(api.tokens.write)
        _, uuids = launch(writer, [{}, {}])
        wait_for(writer, uuids, "running")
        assert prune_events(api.cs.store, utcnow()) > 0
        first = writer.get("/v1/events", params={"limit": 1000}).json()["items"][0]["seq"]
        assert first > 3

        gone = problem(writer.get("/v1/events", params={"after": first - 2}), 410)
        assert gone["detail"] == (
            f"events up to {first - 1} are no longer retained; re-list and start over"
        )
        stream = writer.get("/v1/events/stream", headers={"Last-Event-ID": str(first - 2)})
        assert problem(stream, 410)["title"] == "Gone"
        kept = writer.get("/v1/events", params={"after": first - 1}).json()["items"]
        assert kept[0]["seq"] == first


# --- realms, tokens, health ------------------------------------------------------------------


def test_workers_list_the_serving_process_with_its_heartbeat(reader: httpx.Client) -> None:
    """The server's own engine is a worker: it reports itself (host, pid, alive) within a
    heartbeat, with what it holds."""

    def workers() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = reader.get("/v1/workers").json()
        return found or None

    [worker] = wait_until(workers, timeout=10, what="the server's worker row")
    assert worker["alive"] is True
    assert worker["pid"] > 0
    assert set(worker["holds"]) == {"accounts", "operations", "deliveries"}
    assert reader.get("/v1/workers", params={"include_stopped": "true"}).status_code == 200


def test_realms_list_what_the_reconciler_observed(reader: httpx.Client) -> None:
    """The simulator account's realms are sim-a and sim-b, both available; an unknown account
    is a 404."""

    def realms() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = reader.get(
            "/v1/realms", params={"account": "simulator"}
        ).json()
        return found if len(found) == 2 else None

    found = wait_until(realms, timeout=10, what="the simulator's realms")
    assert [(r["account"], r["name"], r["available"]) for r in found] == [
        ("simulator", "sim-a", True),
        ("simulator", "sim-b", True),
    ]
    assert {r["name"] for r in reader.get("/v1/realms").json()} >= {"sim-a", "sim-b"}
    unknown = reader.get("/v1/realms", params={"account": "nope"})
    assert problem(unknown, 404)["detail"] == "account nope not found"


def test_a_token_is_shown_once_listed_without_it_and_refused_once_revoked(
    api: LiveApi, admin: httpx.Client
) -> None:
    """Create: 201 with the plaintext; list: no plaintext anywhere; the token works with its
    scope; revoke: it is 401 from then on; a taken name is a 409, a bad scope a 422."""
    created = admin.post("/v1/tokens", json={"name": "ci-reader", "scopes": ["read"]})
    assert created.status_code == 201, created.text
    plaintext = created.json()["token"]
    assert plaintext.startswith("cst_")
    assert created.json()["scopes"] == ["read"]
    listing = admin.get("/v1/tokens")
    assert plaintext not in listing.text
    assert {t["name"]: t["token"] for t in listing.json()}["ci-reader"] is None

    token_client = api.client(plaintext)
    assert token_client.get("/v1/instances").status_code == 200
    assert problem(token_client.post("/v1/orders", json={}), 403)["title"] == "Forbidden"
    revoked = admin.delete("/v1/tokens/ci-reader")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert problem(token_client.get("/v1/instances"), 401)["detail"] == (
        "the token is unknown or revoked"
    )
    taken = admin.post("/v1/tokens", json={"name": "ci-reader", "scopes": ["read"]})
    assert problem(taken, 409)["detail"] == "token ci-reader already exists"
    assert bad_fields(admin.post("/v1/tokens", json={"name": "x", "scopes": ["root"]})) == {
        "scopes.0"
    }
    assert problem(admin.delete("/v1/tokens/nope"), 404)["title"] == "Not found"


def test_health_readiness_and_metrics(
    api: LiveApi, reader: httpx.Client, fleet: tuple[str, list[str]]
) -> None:
    """/healthz and /readyz need no token; /metrics needs one and has the fleet by state and
    the provider call counters."""
    anonymous = api.client()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "database": True, "migrations": "current"},
    )
    assert problem(anonymous.get("/metrics"), 401)["title"] == "Unauthorized"
    metrics = reader.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    running = re.search(
        r'^cloudstate_instances\{account="simulator",state="running"\} (\d+)', metrics.text, re.M
    )
    assert running is not None
    assert float(running.group(1)) >= 25
    assert re.search(
        r'^cloudstate_provider_calls_total\{account="simulator",call="create_many"\} [1-9]',
        metrics.text,
        re.M,
    )


def test_each_request_is_logged_once_with_method_path_status_and_duration(
    api: LiveApi, reader: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """One ``cloudstate.api`` line per request, 404s and refusals by the body limit (before
    any route) included: method, path without the query string, status and milliseconds,
    the first three also as the record's fields."""
    caplog.set_level(logging.INFO, logger="cloudstate.api")
    secret = uuid.uuid4().hex
    unknown = uuid.uuid4()
    assert api.client().get("/healthz", params={"q": secret}).status_code == 200
    assert reader.get(f"/v1/instances/{unknown}").status_code == 404
    too_big = reader.post("/v1/orders", content=b" " * (MIB + 1), headers=JSON_TYPE)
    assert too_big.status_code == 413

    lines = [r for r in caplog.records if r.name == "cloudstate.api"]
    fields = [(vars(r)["method"], vars(r)["path"], vars(r)["status"]) for r in lines]
    assert fields == [
        ("GET", "/healthz", 200),
        ("GET", f"/v1/instances/{unknown}", 404),
        ("POST", "/v1/orders", 413),
    ]
    assert re.fullmatch(r"GET /healthz 200 \d+\.\dms", lines[0].getMessage())
    assert all(secret not in r.getMessage() for r in lines)


# --- the OpenAPI document --------------------------------------------------------------------


def test_the_openapi_document_validates_and_declares_problem_responses(
    reader: httpx.Client,
) -> None:
    """OpenAPI 3.1 that validates; every protected operation declares 401, 403 and 422 as
    problem+json; those with a path id declare 404, with a body 413, on the log 410."""
    doc = reader.get("/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for (method, template), operation in each_operation(doc):
        declared = operation["responses"]
        wanted = {"401", "403", "422"}
        wanted |= {"404"} if "{" in template else set()
        wanted |= {"413"} if "requestBody" in operation else set()
        wanted |= {"410"} if template.startswith("/v1/events") else set()
        if (method, template) in PUBLIC:
            continue
        assert wanted <= declared.keys(), (method, template)
        for code in wanted:
            assert PROBLEM in declared[code]["content"], (method, template, code)


def each_operation(doc: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            yield (method.upper(), template), operation


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {key for key, _ in each_operation(doc)}


# --- bad input never gets a 5xx --------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
INSTANCES = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "uuid": st.uuids().map(str) | JSON_VALUES,
            "name": st.text(max_size=70) | JSON_VALUES,
            "memory": st.integers(),
            "storage": st.integers(),
            "realm": st.sampled_from(["sim-a", "nope"]) | JSON_VALUES,
            "labels": st.dictionaries(st.text(max_size=70), st.text(max_size=70), max_size=3),
            "user_data": st.text(max_size=50) | JSON_VALUES,
        },
    ),
    max_size=3,
)
ORDERS = st.fixed_dictionaries(
    {},
    optional={
        "account": st.sampled_from(["simulator", "nope"]) | JSON_VALUES,
        "image": st.sampled_from(["img-basic", "img-nope"]) | JSON_VALUES,
        "hardware_profile": st.sampled_from(["small", "medium", "large"]) | JSON_VALUES,
        "cpu": st.integers(),
        "memory": st.integers(),
        "policy": st.sampled_from(["partial", "all_or_nothing"]) | JSON_VALUES,
        "instances": INSTANCES | JSON_VALUES,
    },
)
BULK = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["start", "stop", "reboot", "destroy"]) | JSON_VALUES,
        "uuids": st.lists(st.uuids().map(str) | JSON_VALUES, max_size=4) | JSON_VALUES,
    },
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=ORDERS | JSON_VALUES)
def test_any_json_posted_as_an_order_gets_a_2xx_or_4xx(writer: httpx.Client, body: Any) -> None:
    """Whatever JSON arrives at POST /v1/orders, the answer is 202, 409 or 422, never a 5xx."""
    response = writer.post("/v1/orders", json=body)
    assert response.status_code in (202, 409, 422), response.text


@FUZZ
@given(body=BULK | JSON_VALUES)
def test_any_json_posted_as_a_bulk_action_gets_a_2xx_or_4xx(
    writer: httpx.Client, body: Any
) -> None:
    """Whatever JSON arrives at POST /v1/instances/actions (on unknown instances), the answer is
    200 with every instance refused, or 422, never a 5xx."""
    response = writer.post("/v1/instances/actions", json=body)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["accepted"] == 0


# --- what the whole module saw (keep last) ---------------------------------------------------


def test_every_operation_ran_and_every_error_it_gave_is_declared_problem_json(
    request: pytest.FixtureRequest, reader: httpx.Client, seen: list[Seen]
) -> None:
    """Over every response of this module: each operation of the document was called; each
    error status an operation answered is declared for it; every 4xx/5xx was problem+json with
    type, title, status and detail; and none was a 500."""
    selected = {item.name.split("[")[0] for item in request.session.items if item.path == THIS}
    if selected != {name for name in globals() if name.startswith("test_")}:
        pytest.skip("checks what the whole module saw; run the whole module")
    doc = reader.get("/openapi.json").json()
    statuses: dict[tuple[str, str], set[int]] = {}
    for response in seen:
        key = operation_of(doc, response.method, response.path)
        if key is not None:
            statuses.setdefault(key, set()).add(response.status)
    assert set(statuses) == operations(doc)
    undeclared = {
        (method, template, status)
        for (method, template), found in statuses.items()
        for status in found
        if status >= 400 and str(status) not in doc["paths"][template][method.lower()]["responses"]
    }
    assert undeclared == set()
    errors = [response for response in seen if response.status >= 400]
    assert [e for e in errors if not is_problem(e)] == []
    assert [e for e in errors if e.status == 500] == []


THIS = Path(__file__)


def operation_of(doc: dict[str, Any], method: str, path: str) -> tuple[str, str] | None:
    """The operation a request reached: literal paths win over templated ones."""
    for template in sorted(doc["paths"], key=lambda t: (t.count("{"), t)):
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in doc["paths"][template]:
            return method, template
    return None


def is_problem(response: Seen) -> bool:
    body = response.body
    return (
        response.content_type.startswith(PROBLEM)
        and isinstance(body, dict)
        and {"type", "title", "status", "detail"} <= body.keys()
        and body["status"] == response.status
    )

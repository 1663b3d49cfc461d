"""Account credentials are write-only and secret, end to end over the live API.

Given at account creation, on update, or inline in a launch order, their values appear in no
API response (create, get, list, patch, verify accepted and refused, orders accepted and
refused), no event, no log record at DEBUG, and
no byte of the database files (SQLite file and WAL, read while the server runs and after it
stopped). Verification itself is covered here too: ``POST /v1/accounts/{name}/verify``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest
from api_server import LiveApi

from cloudstate.logs import JsonFormatter
from cloudstate.testing import simulated_cloud

SECRET = "s3cret-credential-" + uuid.uuid4().hex
ROTATED = "r0tated-credential-" + uuid.uuid4().hex
INLINE = "inl1ne-credential-" + uuid.uuid4().hex
SECRETS = (SECRET, ROTATED, INLINE)


def leaks(text: str | bytes) -> list[str]:
    """Which secret values ``text`` contains."""
    data = text.encode() if isinstance(text, str) else text
    return [value for value in SECRETS if value.encode() in data]


def database_bytes(home: Path) -> bytes:
    """Every byte of the store's files (main file, WAL, shared memory), whatever exists."""
    return b"".join(path.read_bytes() for path in sorted(home.glob("cloudstate.db*")))


def every_event(client: httpx.Client) -> list[str]:
    """Every page of ``GET /v1/events``, as the raw response texts."""
    texts, after = [], 0
    while True:
        response = client.get("/v1/events", params={"after": after, "limit": 100})
        assert response.status_code == 200, response.text
        texts.append(response.text)
        items = response.json()["items"]
        if not items:
            return texts
        after = items[-1]["seq"]


def exercise(api: LiveApi) -> list[str]:
    """Create, read, patch and verify (accepted, refused, accepted) an account with
    credentials; returns every response body."""
    admin = api.client(api.tokens.admin)
    body = {
        "name": "keyed",
        "provider": "simulator",
        "config": {"fast": True},
        "credentials": {"secret_access_key": SECRET},
        "verify": True,
    }
    responses = [admin.post("/v1/accounts", json=body)]
    assert responses[0].status_code == 201, responses[0].text
    patch = {"credentials": {"secret_access_key": ROTATED}}
    responses += [admin.get("/v1/accounts/keyed"), admin.get("/v1/accounts")]
    responses += [admin.patch("/v1/accounts/keyed", json=patch)]
    responses += [admin.post("/v1/accounts/keyed/verify")]
    assert responses[-1].json() == {"ok": True}
    with simulated_cloud(api.cs.settings.simulator_path) as cloud:
        cloud.configure(rejected_namespaces=["keyed"])
        refused = admin.post("/v1/accounts/keyed/verify")
        cloud.configure(rejected_namespaces=[])
    assert refused.status_code == 502, refused.text
    assert refused.json()["title"] == "Provider refused the credentials"
    account = admin.get("/v1/accounts/keyed")
    assert account.json()["status"] == "credentials"
    order = {
        "account": "keyed",
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(uuid.uuid4())}],
        "credentials": {"keyed": {"secret_access_key": INLINE}},
    }
    replacing = admin.post("/v1/orders", json=order)
    assert replacing.status_code == 409, replacing.text  # an admin's credentials stay
    responses += [admin.post("/v1/accounts", json={"name": "bare", "provider": "simulator"})]
    order = {**order, "account": "bare", "credentials": {"bare": {"secret_access_key": INLINE}}}
    launched = admin.post("/v1/orders", json=order)
    assert launched.status_code == 202, launched.text
    bad = admin.post("/v1/orders", json={**order, "credentials": {"other": {"k": INLINE}}})
    assert bad.status_code == 422, bad.text
    again = admin.get(f"/v1/orders/{launched.json()['id']}")
    account = admin.get("/v1/accounts/bare")
    assert account.json()["status"] == "ok"
    assert account.json()["credentials_from_order"] is True  # the order filled an empty account
    answers = [*responses, refused, replacing, launched, bad, again, account]
    return [r.text for r in answers] + every_event(admin)


def test_credentials_never_appear_in_responses_events_logs_or_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "home"
    with LiveApi(home) as api:
        bodies = exercise(api)
        while_running = database_bytes(home)
    assert not [text for text in bodies if leaks(text)]
    events = "".join(bodies)
    assert "account.credentials_required" in events
    formatter = JsonFormatter()
    assert len(caplog.records) > 5
    assert not leaks("\n".join(formatter.format(record) for record in caplog.records))
    assert while_running
    assert not leaks(while_running)
    assert not leaks(database_bytes(home))


def test_verify_needs_admin_and_names_a_missing_account(tmp_path: Path) -> None:
    with LiveApi(tmp_path / "home") as api:
        reader = api.client(api.tokens.read)
        admin = api.client(api.tokens.admin)
        assert reader.post("/v1/accounts/simulator/verify").status_code == 403
        assert admin.post("/v1/accounts/nope/verify").status_code == 404
        assert admin.post("/v1/accounts/simulator/verify").json() == {"ok": True}


def test_an_account_created_with_verify_is_not_stored_when_refused(tmp_path: Path) -> None:
    with LiveApi(tmp_path / "home") as api:
        admin = api.client(api.tokens.admin)
        body = {"name": "refused", "provider": "simulator", "verify": True}
        with simulated_cloud(api.cs.settings.simulator_path) as cloud:
            cloud.configure(rejected_namespaces=["refused"])
            response = admin.post("/v1/accounts", json=body)
        assert response.status_code == 502, response.text
        assert admin.get("/v1/accounts/refused").status_code == 404


def inline_order(account: str, credentials: dict[str, str], **fields: object) -> dict[str, object]:
    return {
        "account": account,
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(uuid.uuid4())}],
        "credentials": {account: credentials},
        **fields,
    }


def test_a_write_token_cannot_replace_credentials_an_admin_set_on_an_account(
    tmp_path: Path,
) -> None:
    """The audit's attack: an admin sets an account's credentials, then a write token's order
    carries other ones inline. Refused with a 409 problem naming the account and the way to
    replace them (PATCH, admin); nothing is written: the account keeps its credentials and
    status, and the order's instance does not exist. The same credentials repeated are fine
    and change nothing."""
    with LiveApi(tmp_path / "home") as api:
        admin, writer = api.client(api.tokens.admin), api.client(api.tokens.write)
        body = {"name": "opacct", "provider": "simulator", "config": {"fast": True}}
        created = admin.post("/v1/accounts", json={**body, "credentials": {"api_key": SECRET}})
        assert created.status_code == 201, created.text

        order = inline_order("opacct", {"api_key": INLINE}, credentials_ttl=1)
        refused = writer.post("/v1/orders", json=order)

        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["title"] == "Conflict"
        assert "'opacct'" in problem["detail"]
        assert "PATCH /v1/accounts/opacct" in problem["detail"]
        assert not leaks(refused.text)
        account = admin.get("/v1/accounts/opacct").json()
        assert (account["credentials_from_order"], account["status"]) == (False, "ok")
        assert account["credentials_expire_at"] is None
        instance = order["instances"][0]["uuid"]  # type: ignore[index]
        assert admin.get(f"/v1/instances/{instance}").status_code == 404

        same = writer.post("/v1/orders", json=inline_order("opacct", {"api_key": SECRET}))
        assert same.status_code == 202, same.text
        account = admin.get("/v1/accounts/opacct").json()
        assert (account["credentials_from_order"], account["credentials_expire_at"]) == (
            False,
            None,
        )


def test_inline_credentials_fill_an_empty_account_and_never_replace_another_orders_live_ones(
    tmp_path: Path,
) -> None:
    """An account without credentials takes an order's; a later order with other credentials
    gets 409 while those work, and may replace them once they are refused (status
    ``credentials``: the design note's flow of handing them over again)."""
    with LiveApi(tmp_path / "home") as api:
        admin, writer = api.client(api.tokens.admin), api.client(api.tokens.write)
        body = {"name": "empty", "provider": "simulator", "config": {"fast": True}}
        assert admin.post("/v1/accounts", json=body).status_code == 201

        first = writer.post("/v1/orders", json=inline_order("empty", {"api_key": INLINE}))
        assert first.status_code == 202, first.text
        assert admin.get("/v1/accounts/empty").json()["credentials_from_order"] is True
        other = writer.post("/v1/orders", json=inline_order("empty", {"api_key": ROTATED}))
        assert other.status_code == 409, other.text
        assert "from an earlier order" in other.json()["detail"]

        with simulated_cloud(api.cs.settings.simulator_path) as cloud:
            cloud.configure(rejected_namespaces=["empty"])
            assert admin.post("/v1/accounts/empty/verify").status_code == 502
            cloud.configure(rejected_namespaces=[])
        assert admin.get("/v1/accounts/empty").json()["status"] == "credentials"
        again = writer.post("/v1/orders", json=inline_order("empty", {"api_key": ROTATED}))
        assert again.status_code == 202, again.text
        assert admin.get("/v1/accounts/empty").json()["status"] == "ok"

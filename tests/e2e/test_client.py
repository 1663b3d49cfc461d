"""``cloudstate.client`` against a live ``cloudstate serve`` (a subprocess, real HTTP).

Each test tags what it launches with a label of its own and reads events after a cursor it
took first, so tests sharing the one server never see each other's instances or events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
from server import CuttableProxy, Served, free_port, shared_server

from cloudstate.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    CursorExpiredError,
    Event,
    Instance,
    Order,
    UnreachableError,
)
from cloudstate.config import load_settings
from cloudstate.exceptions import (
    ActionNotAllowedError,
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from cloudstate.service.retention import prune_events
from cloudstate.store import Store
from cloudstate.store.tables import utcnow
from cloudstate.testing import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from shared_server(tmp_path_factory)


@pytest.fixture
def client(server: Served) -> Iterator[Client]:
    with Client(server.url, server.token) as api:
        yield api


@pytest.fixture
def tag() -> dict[str, str]:
    """A label only this test's instances carry."""
    return {"test": uuid.uuid4().hex[:12]}


def launch(client: Client, tag: dict[str, str], count: int, **fields: object) -> list[uuid.UUID]:
    order = client.launch(
        account="simulator",
        image="img-web",
        hardware_profile="small",
        labels=tag,
        instances=[{"uuid": uuid.uuid4(), "name": f"c-{n}"} for n in range(count)],
        **fields,
    )
    return [instance.uuid for instance in order.instances]


def all_running(client: Client, uuids: list[uuid.UUID]) -> list[Instance]:
    def running() -> list[Instance] | None:
        found = [client.get(u) for u in uuids]
        return found if all(i.state == "running" for i in found) else None

    return wait_until(running, timeout=20, interval=0.1, what="instances running")


def test_launch_three_then_walk_the_cursor_pages(client: Client, tag: dict[str, str]) -> None:
    """An order of three comes back accepted with every instance ``new``; listing them two at a
    time gives a cursor to a last page of one, and ``iter_instances`` walks all of them."""
    order = client.launch(
        account="simulator",
        image="img-web",
        hardware_profile="small",
        labels=tag,
        instances=[{"uuid": str(uuid.uuid4()), "name": f"web-{n}"} for n in range(3)],
    )
    assert [i.state for i in order.instances] == ["new"] * 3
    assert client.get_order(order.id).id == order.id

    first = client.list(labels=tag, limit=2)
    assert len(first.items) == 2
    assert first.next_cursor
    second = client.list(labels=tag, limit=2, cursor=first.next_cursor)
    assert len(second.items) == 1
    assert second.next_cursor is None
    walked = {i.uuid for i in client.iter_instances(labels=tag, page_size=1)}
    assert walked == {i.uuid for i in order.instances}
    assert {i.name for i in all_running(client, list(walked))} == {"web-0", "web-1", "web-2"}
    assert len(client.list(labels=tag, state=["running"], account="simulator").items) == 3


def slow_account(client: Client, home: Path) -> str:
    """A simulator account on a cloud of its own where instances take a minute to boot, so an
    order on it stays launching (its knobs touch no other account)."""
    name = f"slow-{uuid.uuid4().hex[:8]}"
    config = {"path": str(home / f"{name}.db"), "fast": True, "boot_seconds": 60.0}
    client.add_account(name, "simulator", config=config)
    return name


def finished(client: Client, order_id: uuid.UUID) -> Order:
    """The order once it is in a final state."""

    def done() -> Order | None:
        order = client.get_order(order_id)
        return order if order.finished_at is not None else None

    return wait_until(done, timeout=20, interval=0.1, what=f"order {order_id} finished")


def test_orders_are_paged_newest_first_and_filtered_by_state(
    client: Client, tag: dict[str, str]
) -> None:
    """``orders`` gives a page, newest first, with a cursor to the next; ``iter_orders`` walks
    every page; ``state`` keeps only orders in those states."""
    ids = [
        client.launch(
            account="simulator",
            image="img-web" if n < 2 else "img-missing",
            hardware_profile="small",
            labels=tag,
            instances=[{"uuid": uuid.uuid4()}],
        ).id
        for n in range(3)
    ]
    assert [finished(client, i).state for i in ids] == ["running", "running", "failed"]
    first = client.orders(limit=2)
    assert [order.id for order in first.items] == ids[::-1][:2]
    assert first.next_cursor is not None
    assert client.orders(limit=2, cursor=first.next_cursor).items[0].id == ids[0]
    walked = [order.id for order in client.iter_orders(page_size=2)]
    assert walked[:3] == ids[::-1]
    running = list(client.iter_orders(state="running"))
    assert {ids[0], ids[1]} <= {order.id for order in running}
    assert {order.state for order in running} == {"running"}
    both = {order.id for order in client.orders(state=["running", "failed"], limit=1000).items}
    assert set(ids) <= both


def test_cancel_order_stops_a_launch_and_refuses_a_finished_one(
    client: Client, tag: dict[str, str], tmp_path: Path
) -> None:
    """``cancel_order`` on an order whose instances are pending answers it ``rolling_back``; it
    ends ``cancelled`` with every instance terminated. A finished order raises ConflictError,
    an unknown one NotFoundError."""
    account = slow_account(client, tmp_path)
    order = client.launch(
        account=account,
        image="img-web",
        hardware_profile="small",
        labels=tag,
        instances=[{"uuid": uuid.uuid4()} for _ in range(2)],
    )
    wait_until(
        lambda: client.get_order(order.id).counts == {"pending": 2},
        timeout=15,
        interval=0.1,
        what="both instances pending",
    )
    cancelled = client.cancel_order(order.id)
    assert cancelled.state == "rolling_back"
    done = finished(client, order.id)
    assert (done.state, done.counts) == ("cancelled", {"terminated": 2})
    with pytest.raises(ConflictError, match="is cancelled"):
        client.cancel_order(order.id)
    with pytest.raises(NotFoundError) as unknown:
        client.cancel_order(uuid.uuid4())
    assert unknown.value.kind == "order"


def test_an_action_with_wait_returns_the_instance_in_its_target_state(
    client: Client, tag: dict[str, str]
) -> None:
    """``action(..., wait=True)`` answers once the instance is stopped, not merely accepted."""
    [target] = launch(client, tag, 1)
    all_running(client, [target])
    outcome = client.action(target, "stop", wait=True, timeout=20)
    assert outcome.result.accepted
    assert outcome.result.operation_id is not None
    assert outcome.instance.state == "stopped"
    assert outcome.instance.operation is None


def test_a_bulk_action_answers_each_instance_on_its_own(
    client: Client, tag: dict[str, str]
) -> None:
    """One running, one stopped and one unknown UUID: the running one stops, the stopped one is
    refused with the actions its state allows, the unknown one is refused as not found."""
    running, stopped = launch(client, tag, 2)
    all_running(client, [running, stopped])
    client.action(stopped, "stop", wait=True, timeout=20)
    nobody = uuid.uuid4()

    bulk = client.bulk_action([running, stopped, nobody], "stop")

    assert (bulk.accepted, bulk.refused) == (1, 2)
    by_uuid = {result.uuid: result for result in bulk.results}
    assert by_uuid[running].accepted
    assert by_uuid[stopped].allowed_actions == ["start", "destroy"]
    assert "not found" in by_uuid[nobody].error


def test_problem_responses_become_the_matching_exceptions(
    client: Client, server: Served, tag: dict[str, str]
) -> None:
    """422 is a ValidationError listing every bad field; 404 a NotFoundError naming what; a
    forbidden action an ActionNotAllowedError with the allowed ones; a taken name an
    AlreadyExistsError; a wrong token (401) or a missing scope (403) an AuthenticationError; a
    closed port an UnreachableError."""
    with pytest.raises(ValidationError) as invalid:
        client.launch(account="simulator", memory=-1, instances=[{"uuid": "not-a-uuid"}])
    assert {"memory", "instances.0.uuid"} <= {e.field for e in invalid.value.errors}

    missing = uuid.uuid4()
    with pytest.raises(NotFoundError) as not_found:
        client.get(missing)
    assert (not_found.value.kind, not_found.value.key) == ("instance", str(missing))

    [target] = launch(client, tag, 1)
    all_running(client, [target])
    with pytest.raises(ActionNotAllowedError) as refused:
        client.action(target, "start")
    assert refused.value.action == "start"
    assert refused.value.state == "running"
    assert refused.value.allowed == ("stop", "reboot", "destroy")

    client.create_token(f"dup-{tag['test']}", ["read"])
    with pytest.raises(AlreadyExistsError):
        client.create_token(f"dup-{tag['test']}", ["read"])

    with Client(server.url, "cst_wrong") as stranger, pytest.raises(AuthenticationError) as auth:
        stranger.accounts()
    assert auth.value.status == 401
    _, plaintext = client.create_token(f"reader-{tag['test']}", ["read"])
    with Client(server.url, plaintext) as reader:
        assert reader.accounts()
        with pytest.raises(AuthenticationError) as scope:
            reader.tokens()
    assert scope.value.status == 403

    nowhere = Client(f"http://127.0.0.1:{free_port()}", "x")
    with nowhere, pytest.raises(UnreachableError, match="cannot reach cloudstate at"):
        nowhere.health()


def test_the_stream_resumes_after_a_disconnect_with_no_gap_and_no_duplicate(
    client: Client, server: Served, tag: dict[str, str]
) -> None:
    """A real disconnect: the stream runs through a TCP proxy that drops the connection after
    the first events, while the instances go on changing (they boot, one is stopped). Reading
    on, the client reconnects by itself with ``Last-Event-ID``, and what it yields equals, event
    for event, the page endpoint's record of the same span (so streamed events also carry the
    same fields as paged ones)."""
    start = client.last_event_seq()
    with CuttableProxy(server.port) as proxy, Client(proxy.url, server.token) as proxied:
        feed = proxied.stream(after=start, labels=tag)
        first, second = launch(client, tag, 2)
        before = [next(feed) for _ in range(3)]
        proxy.cut()

        all_running(client, [first, second])
        client.action(first, "stop", wait=True, timeout=20)
        after = []
        for event in feed:
            after.append(event)
            if event.type == "instance.action_completed" and event.subject == str(first):
                break
        feed.close()

    seen = before + after
    recorded = list(client.iter_events(after=start, labels=tag))
    assert [e.seq for e in seen] == [e.seq for e in recorded[: len(seen)]]
    assert seen == recorded[: len(seen)]
    assert len(proxy.requests) >= 2
    resumed = proxy.requests[1].decode().lower()
    assert "last-event-id:" in resumed
    assert "after=" not in resumed
    resume_seq = int(resumed.split("last-event-id:")[1].split()[0])
    assert resume_seq in [e.seq for e in seen]
    assert resume_seq >= before[-1].seq


def test_an_expired_cursor_raises_cursor_expired(
    client: Client, server: Served, tag: dict[str, str]
) -> None:
    """After retention prunes old events (the sweeper's own function, run on the server's
    database), a cursor before them is 410 Gone: ``CursorExpiredError`` from the page and the
    stream alike."""
    launch(client, tag, 1)
    store = Store.from_settings(load_settings(home=server.home))
    try:
        assert prune_events(store, utcnow()) > 0
    finally:
        store.close()
    with pytest.raises(CursorExpiredError):
        client.events(after=1)
    with pytest.raises(CursorExpiredError):
        next(client.stream(after=1))


def test_accounts_subscriptions_realms_and_tokens_round_trip(
    client: Client, tag: dict[str, str]
) -> None:
    """Add, change and remove an account; a subscription shows its secret only when created;
    the simulator's realms are listed; a created token can be revoked."""
    name = f"sim-{tag['test']}"
    added = client.add_account(name, "simulator", config={"fast": True})
    assert (added.provider, added.has_credentials) == ("simulator", False)
    assert client.update_account(name, config={"fast": True}).name == name
    assert client.verify_account(name) is True
    assert name in {a.name for a in client.accounts()}
    client.remove_account(name)
    with pytest.raises(NotFoundError):
        client.get_account(name)

    # (a name that never resolves: loopback and private targets are refused by default)
    hook = client.subscribe("https://hooks.example.invalid/cloudstate", filters={"labels": tag})
    assert hook.secret
    assert hook.secret.startswith("whsec_")
    assert client.get_subscription(hook.id).secret is None
    assert client.update_subscription(hook.id, description="audit").description == "audit"
    client.unsubscribe(hook.id)
    assert hook.id not in {s.id for s in client.subscriptions()}

    assert {r.name for r in client.realms("simulator")} == {"sim-a", "sim-b"}

    token, plaintext = client.create_token(f"ci-{tag['test']}", ["write"])
    assert plaintext.startswith("cst_")
    assert token.token == plaintext
    assert all(t.token is None for t in client.tokens())
    assert client.revoke_token(token.name).revoked_at is not None


def test_defaults_come_from_the_environment_and_the_token_file(
    server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no URL or token given, the client uses CLOUDSTATE_HOST/PORT and the token
    ``cloudstate serve`` saved in CLOUDSTATE_HOME; a server whose schema is current is ready."""
    for name in ("CLOUDSTATE_URL", "CLOUDSTATE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSTATE_HOME", str(server.home))
    monkeypatch.setenv("CLOUDSTATE_PORT", str(server.port))
    with Client() as api:
        assert api.url == server.url
        assert api.health().status == "ok"
        assert api.ready().status == "ready"
        assert api.accounts()


def test_a_conflict_without_allowed_actions_is_a_plain_conflict(
    client: Client, tag: dict[str, str]
) -> None:
    """Removing the default account while it holds instances is a plain ConflictError, not an
    ActionNotAllowedError (the problem lists no allowed actions)."""
    launch(client, tag, 1)
    with pytest.raises(ConflictError) as conflict:
        client.remove_account("simulator")
    assert not isinstance(conflict.value, ActionNotAllowedError)


def test_the_async_client_does_the_same(server: Served, tag: dict[str, str]) -> None:
    """``AsyncClient``: launch, get, pages, an action with wait, the event page, and the stream
    (whose events equal the page's), and errors mapped the same way."""

    async def scenario() -> None:
        async with AsyncClient(server.url, server.token) as api:
            start = await api.last_event_seq()
            order = await api.launch(
                account="simulator",
                image="img-basic",
                hardware_profile="small",
                labels=tag,
                instances=[{"uuid": uuid.uuid4()} for _ in range(2)],
            )
            target = order.instances[0].uuid
            assert (await api.get(target)).uuid == target
            page = await api.list(labels=tag, limit=1)
            assert page.next_cursor is not None
            assert len([i async for i in api.iter_instances(labels=tag, page_size=1)]) == 2
            while (await api.get(target)).state != "running":
                await asyncio.sleep(0.1)
            outcome = await api.action(target, "reboot", wait=True, timeout=20)
            assert outcome.instance.state == "running"
            recorded = (await api.events(after=start, limit=5, labels=tag)).items
            streamed: list[Event] = []
            async with aclosing(api.stream(after=start, labels=tag)) as feed:
                async for event in feed:
                    streamed.append(event)
                    if len(streamed) == len(recorded):
                        break
            assert streamed == recorded
            with pytest.raises(NotFoundError):
                await api.get(uuid.uuid4())

    asyncio.run(scenario())


def test_the_async_client_lists_and_cancels_orders(
    client: Client, server: Served, tag: dict[str, str], tmp_path: Path
) -> None:
    """``AsyncClient``: ``orders`` (newest first), ``iter_orders`` with a state filter, and
    ``cancel_order``, with a finished order's cancel a ConflictError."""
    account = slow_account(client, tmp_path)

    async def scenario() -> None:
        async with AsyncClient(server.url, server.token) as api:
            order = await api.launch(
                account=account,
                image="img-web",
                hardware_profile="small",
                labels=tag,
                instances=[{"uuid": uuid.uuid4()}],
            )
            assert (await api.orders(limit=1)).items[0].id == order.id
            while (await api.get_order(order.id)).state != "launching":
                await asyncio.sleep(0.1)
            assert (await api.cancel_order(order.id)).state == "rolling_back"
            while (await api.get_order(order.id)).state != "cancelled":
                await asyncio.sleep(0.1)
            listed = [o.id async for o in api.iter_orders(state="cancelled", page_size=1)]
            assert order.id in listed
            with pytest.raises(ConflictError):
                await api.cancel_order(order.id)

    asyncio.run(scenario())


def test_home_without_a_token_file_sends_no_token(
    tmp_path: Path, server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home with no token file and no CLOUDSTATE_TOKEN: requests go without a token and the
    server's 401 is an AuthenticationError that says how to give one."""
    monkeypatch.delenv("CLOUDSTATE_TOKEN", raising=False)
    with (
        Client(server.url, home=tmp_path) as api,
        pytest.raises(AuthenticationError) as refused,
    ):
        api.accounts()
    assert "CLOUDSTATE_TOKEN" in str(refused.value)

"""Webhooks end to end: real receivers on loopback, a real API and engine, the real CLI.

``LiveApi`` serves the API over an embedded engine whose workers run in background threads, so
deliveries are the deliverer's own, sent by its real HTTP sender to ``WebhookReceiver`` servers
on 127.0.0.1 (allowed by ``webhook_allow``). Receivers verify every request with the Standard
Webhooks reference library. The endpoint circuit breaker is set out of reach here (its own
tests are in tests/integration): these tests are about the retry schedule, not the breaker.
The CLI tests run ``cloudstate serve`` and the ``cloudstate`` command as subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import FAST, LiveApi
from server import clean_env, cloudstate_command, free_port
from standardwebhooks import Webhook, WebhookVerificationError

from cloudstate.client import Client
from cloudstate.service.retention import prune_events
from cloudstate.store.tables import utcnow
from cloudstate.testing import Received, WebhookReceiver, wait_until
from cloudstate.webhooks import generate_secret

pytestmark = pytest.mark.slow

NO_BREAKER = {"delivery_breaker_threshold": 1_000_000}
QUICK = {**FAST, **NO_BREAKER, "delivery_retry_schedule": "0,0.05,0.05,0.05"}
"""Four attempts, 50 ms apart: a failing delivery is dead within a second."""
DEFAULT_SCHEDULE = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
"""The default retry schedule (Settings.delivery_retry_schedule): eight attempts, ~27.6 h."""


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("webhooks"), settings=dict(QUICK)) as live:
        yield live


@pytest.fixture(scope="module")
def writer(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.write)


@pytest.fixture(scope="module")
def reader(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.read)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


def subscribe(client: httpx.Client, url: str, tag: str, **filters: Any) -> tuple[str, str]:
    """A subscription to the events of instances labelled ``test=tag``: (id, secret)."""
    secret = generate_secret()
    body = {"url": url, "secret": secret, "filters": {"labels": {"test": tag}, **filters}}
    response = client.post("/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], secret


def launch(client: httpx.Client, tag: str, count: int = 1) -> list[str]:
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    order = {
        "account": "simulator",
        "image": "img-basic",
        "hardware_profile": "small",
        "labels": {"test": tag},
        "instances": [{"uuid": u} for u in uuids],
    }
    response = client.post("/v1/orders", json=order)
    assert response.status_code == 202, response.text
    return uuids


def running(client: httpx.Client, uuids: list[str]) -> None:
    def settled() -> bool:
        views = [client.get(f"/v1/instances/{u}").json() for u in uuids]
        return all(v["state"] == "running" and v["operation"] is None for v in views)

    wait_until(settled, timeout=15, interval=0.05, what=f"{len(uuids)} running")


def last_seq(client: httpx.Client) -> int:
    return int(client.get("/v1/events", params={"limit": 1}).json()["last_seq"])


def tagged_events(client: httpx.Client, tag: str, after: int) -> list[dict[str, Any]]:
    """The log's events of the instances labelled ``test=tag``, after ``after``."""
    params = {"label": f"test={tag}", "after": after, "limit": 1000}
    return list(client.get("/v1/events", params=params).json()["items"])


def delivery_log(client: httpx.Client, subscription: str, **params: Any) -> list[dict[str, Any]]:
    """The whole delivery log, walked page by page."""
    items: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        response = client.get(
            f"/v1/subscriptions/{subscription}/deliveries", params={**params, "after": after}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        after = page["next_after"]
    return items


def finished_log(
    client: httpx.Client, subscription: str, count: int, timeout: float = 15
) -> list[dict[str, Any]]:
    """The log once it has ``count`` rows and none is pending or in flight."""

    def done() -> list[dict[str, Any]] | None:
        items = delivery_log(client, subscription)
        open_ = [item for item in items if item["status"] in ("pending", "delivering")]
        return items if len(items) == count and not open_ else None

    return wait_until(done, timeout=timeout, interval=0.05, what=f"{count} finished deliveries")


class Verifying:
    """A receiver's ``respond``: verifies each request with ``standardwebhooks``, fails the first
    ``failures`` attempts of each event with ``status``, then answers 200. Keeps the events it
    accepted, in arrival order, and any request that did not verify."""

    def __init__(self, secret: str, failures: int = 0, status: int = 500) -> None:
        self.webhook = Webhook(secret)
        self.failures = failures
        self.status = status
        self.attempts: Counter[str] = Counter()
        self.accepted: list[dict[str, Any]] = []
        self.unverified: list[Received] = []
        self._lock = threading.Lock()

    def __call__(self, request: Received) -> tuple[int, float]:
        try:
            event = self.webhook.verify(request.body, request.headers)
        except WebhookVerificationError:
            self.unverified.append(request)
            return 400, 0.0
        with self._lock:
            self.attempts[event["id"]] += 1
            if self.attempts[event["id"]] <= self.failures:
                return self.status, 0.0
            self.accepted.append(event)
        return 200, 0.0

    def accepted_sequences(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = defaultdict(list)
        for event in self.accepted:
            found[event["subject"]].append(event["data"]["sequence"])
        return dict(found)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


# --- retries and order -----------------------------------------------------------------------


def test_a_receiver_failing_twice_per_event_still_gets_every_event_in_per_instance_order(
    api: LiveApi, writer: httpx.Client, receiver: WebhookReceiver, tag: str
) -> None:
    """Every request verifies with ``standardwebhooks``; each event's first two attempts get a
    500. Every event of two launched instances is accepted exactly once, each instance's in
    sequence order 1, 2, 3, ... (requests of one instance never overlap, and a retry is never
    overtaken), and the log shows 3 attempts and a last status of 200 for each."""
    start = last_seq(writer)
    subscription, secret = subscribe(writer, receiver.url, tag)
    flaky = Verifying(secret, failures=2)
    receiver.respond = flaky
    uuids = launch(writer, tag, 2)
    running(writer, uuids)

    events = tagged_events(writer, tag, start)
    log = finished_log(writer, subscription, len(events))

    assert flaky.unverified == []
    assert receiver.overlaps == []
    assert sorted(e["id"] for e in flaky.accepted) == sorted(str(e["id"]) for e in events)
    for instance_uuid in uuids:
        count = sum(1 for e in events if e["subject"] == instance_uuid)
        assert flaky.accepted_sequences()[instance_uuid] == list(range(1, count + 1))
        arrivals = [
            r.event["data"]["sequence"]
            for r in receiver.requests
            if r.event["subject"] == instance_uuid
        ]
        assert arrivals == sorted(arrivals)
        assert len(arrivals) == 3 * count
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in log} == {
        ("delivered", 3, 200)
    }
    assert [d["event_seq"] for d in log] == [e["seq"] for e in events]
    assert all(d["delivered_at"] and d["next_attempt_at"] is None for d in log)


def test_a_day_long_outage_dead_letters_on_the_schedule_then_a_replay_delivers_everything(
    tmp_path: Path, receiver: WebhookReceiver, tag: str
) -> None:
    """A receiver that answers 503 to everything, under the default retry schedule (8 attempts
    over ~27.6 h): every event is dead after exactly 8 attempts, each retry having been
    scheduled the schedule's delay (±10 % jitter) after the previous attempt. Then the
    receiver comes back and one replay from the subscription's start cursor delivers every
    event again, each instance's in sequence order.

    How the day passes: the deliverer reads the wall clock (``utcnow``), which a test cannot
    move. So after each failed attempt the test reads the delivery's row, checks that
    ``next_attempt_at - last_attempt_at`` is the schedule's next delay, then rewrites
    ``next_attempt_at`` to now in the store (as if that delay had elapsed) and wakes the
    workers. Nothing else is touched: attempts, statuses and dead-lettering are the engine's.
    """
    settings = {**FAST, **NO_BREAKER}  # the default schedule
    with LiveApi(tmp_path / "home", settings=settings) as api:
        client = api.client(api.tokens.write)
        subscription, secret = subscribe(
            client, receiver.url, tag, types=["instance.created", "instance.state_changed"]
        )
        start = last_seq(client)
        down = Verifying(secret, failures=len(DEFAULT_SCHEDULE) + 1, status=503)
        receiver.respond = down
        uuids = launch(client, tag, 2)
        running(client, uuids)
        delays = fast_forward(api, uuid.UUID(subscription), expected=6)

        log = delivery_log(client, subscription)
        assert {(d["status"], d["attempts"], d["last_status_code"]) for d in log} == {
            ("dead", len(DEFAULT_SCHEDULE), 503)
        }
        assert len(log) == 6
        for row in log:
            seen = delays[row["id"]]
            assert [attempt for attempt, _ in seen] == list(range(1, len(DEFAULT_SCHEDULE)))
            for attempt, delay in seen:
                wanted = DEFAULT_SCHEDULE[attempt]
                assert 0.9 * wanted <= delay <= 1.1 * wanted + 1.0, (attempt, delay)
        assert set(Counter(r.headers["webhook-id"] for r in receiver.requests).values()) == {8}

        back_up = Verifying(secret)
        receiver.respond = back_up
        replayed = client.post(f"/v1/subscriptions/{subscription}/replay", json={"after": start})
        assert replayed.status_code == 202, replayed.text
        assert {k: replayed.json()[k] for k in ("queued", "reset", "created", "more")} == {
            "queued": 6,
            "reset": 6,
            "created": 0,
            "more": False,
        }
        back = finished_log(client, subscription, 6)
        wanted: dict[str, list[int]] = defaultdict(list)
        for event in tagged_events(client, tag, start):
            if event["type"] in ("instance.created", "instance.state_changed"):
                wanted[event["subject"]].append(event["instance_seq"])

    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in back} == {
        ("delivered", 1, 200)
    }
    assert down.unverified == []
    assert back_up.unverified == []
    assert back_up.accepted_sequences() == dict(wanted)
    assert sorted(wanted) == sorted(uuids)
    assert all(len(seqs) == 3 for seqs in wanted.values())


def fast_forward(
    api: LiveApi, subscription: uuid.UUID, expected: int
) -> dict[int, list[tuple[int, float]]]:
    """Make each scheduled retry due now, until ``expected`` deliveries are all dead.

    Returns, per delivery id, (attempts so far, seconds the retry was scheduled after the
    last attempt) for every retry that was brought forward.
    """
    delays: dict[int, list[tuple[int, float]]] = defaultdict(list)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with api.cs.store.unit_of_work() as uow:
            rows = uow.deliveries.for_subscription(subscription)
            now = utcnow()
            waiting = [r for r in rows if r.status == "pending" and r.next_attempt_at > now]
            for row in waiting:
                assert row.last_attempt_at is not None
                gap = (row.next_attempt_at - row.last_attempt_at).total_seconds()
                delays[row.id].append((row.attempts, gap))
                row.next_attempt_at = now
            uow.commit()
            statuses = [r.status for r in rows]
        if waiting:
            api.cs.engine.wake()
        if len(statuses) == expected and set(statuses) == {"dead"}:
            return dict(delays)
        time.sleep(0.01)
    raise AssertionError(f"not all dead in time: {statuses}")


# --- 410, enable, replay ---------------------------------------------------------------------


def test_a_410_disables_the_subscription_and_enable_brings_new_events_back(
    writer: httpx.Client, receiver: WebhookReceiver, tag: str
) -> None:
    """The receiver answers 410: the subscription is disabled with the reason, its queue
    cancelled, and events while disabled are not queued. ``enable`` re-enables it: the next
    instance's event is delivered; a replay from the start then brings the two it missed."""
    start = last_seq(writer)
    subscription, secret = subscribe(writer, receiver.url, tag, types=["instance.created"])
    receiver.respond = lambda _request: (410, 0.0)
    [first] = launch(writer, tag)

    def disabled() -> dict[str, Any] | None:
        body: dict[str, Any] = writer.get(f"/v1/subscriptions/{subscription}").json()
        return body if not body["enabled"] else None

    view = wait_until(disabled, timeout=10, what="disabled by the 410")
    assert view["disabled_reason"].startswith("the receiver answered HTTP 410 at ")
    [gone] = delivery_log(writer, subscription)
    assert (gone["status"], gone["attempts"], gone["last_status_code"]) == ("cancelled", 1, 410)
    [second] = launch(writer, tag)
    wait_until(lambda: tagged_events(writer, tag, start)[-1]["subject"] == second, timeout=10)
    assert len(delivery_log(writer, subscription)) == 1

    receiver.respond = Verifying(secret)
    enabled = writer.post(f"/v1/subscriptions/{subscription}/enable")
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["enabled"], enabled.json()["disabled_reason"]) == (True, "")
    [third] = launch(writer, tag)
    finished_log(writer, subscription, 2)
    assert [r.event["subject"] for r in receiver.requests[1:]] == [third]

    replayed = writer.post(f"/v1/subscriptions/{subscription}/replay", json={"after": start})
    assert (replayed.json()["reset"], replayed.json()["created"]) == (2, 1)
    finished_log(writer, subscription, 3)
    assert sorted(r.event["subject"] for r in receiver.requests[2:]) == sorted(
        [first, second, third]
    )


# --- secret rotation -------------------------------------------------------------------------


def test_a_rotated_secret_signs_beside_the_old_one_until_the_grace_period_ends(
    writer: httpx.Client, reader: httpx.Client, receiver: WebhookReceiver, tag: str
) -> None:
    """After ``rotate-secret`` with a 3 s grace, a request carries two signatures and verifies
    with ``standardwebhooks`` under the old secret and the new one; once the grace has passed
    (real time), only the new one verifies. The new secret is shown once, and rotating needs
    the write scope."""
    subscription, old = subscribe(writer, receiver.url, tag, types=["instance.created"])
    path = f"/v1/subscriptions/{subscription}/rotate-secret"
    assert problem(reader.post(path, json={}), 403)["detail"] == "this token lacks the write scope"
    bad = problem(writer.post(path, json={"secret": "whsec_***"}), 422)
    assert [e["field"] for e in bad["errors"]] == ["secret"]

    rotated = writer.post(path, json={"grace_seconds": 3})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert new.startswith("whsec_")
    assert new != old
    assert timedelta(seconds=2) < expires - utcnow() <= timedelta(seconds=3)
    assert writer.get(f"/v1/subscriptions/{subscription}").json()["secret"] is None

    launch(writer, tag)
    [during] = wait_until(lambda: list(receiver.requests), timeout=5, what="a request")
    assert int(during.headers["webhook-timestamp"]) < expires.timestamp()
    assert len(during.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(during.body, during.headers)["type"] == "instance.created"

    wait_until(lambda: utcnow() > expires, timeout=5, what="the end of the grace period")
    launch(writer, tag)
    after = wait_until(lambda: receiver.requests[1:], timeout=5, what="a second request")[0]
    assert len(after.headers["webhook-signature"].split()) == 1
    assert Webhook(new).verify(after.body, after.headers)["type"] == "instance.created"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)


# --- operator endpoints ----------------------------------------------------------------------


def test_the_delivery_log_filters_and_pages_and_retry_sends_one_dead_delivery_again(
    writer: httpx.Client, reader: httpx.Client, receiver: WebhookReceiver, tag: str
) -> None:
    """Three events die after four 500s. The log (read scope) filters by status and pages with
    ``after``; retrying one (write scope) delivers it with its attempts kept (5); retrying a
    delivered one is a 409 that points at replay; unknown ids are 404s."""
    subscription, secret = subscribe(writer, receiver.url, tag, types=["instance.created"])
    receiver.respond = lambda _request: (500, 0.0)
    launch(writer, tag, 3)
    dead = finished_log(writer, subscription, 3)
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in dead} == {("dead", 4, 500)}

    base = f"/v1/subscriptions/{subscription}/deliveries"
    assert reader.get(base, params={"status": "delivered"}).json() == {
        "items": [],
        "next_after": None,
    }
    either = reader.get(base, params=[("status", "dead"), ("status", "pending")]).json()
    assert len(either["items"]) == 3
    assert problem(reader.get(base, params={"status": "lost"}), 422)["errors"][0]["field"] == (
        "status.0"
    )
    pages = [reader.get(base, params={"limit": 2}).json()]
    pages.append(reader.get(base, params={"limit": 2, "after": pages[0]["next_after"]}).json())
    assert [len(p["items"]) for p in pages] == [2, 1]
    assert pages[1]["next_after"] is None
    assert [d["id"] for p in pages for d in p["items"]] == [d["id"] for d in dead]

    target = dead[1]["id"]
    assert problem(reader.post(f"/v1/deliveries/{target}/retry"), 403)
    receiver.respond = Verifying(secret)
    retried = writer.post(f"/v1/deliveries/{target}/retry")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 4)
    log = finished_log(writer, subscription, 3)
    assert [(d["status"], d["attempts"]) for d in log] == [
        ("dead", 4),
        ("delivered", 5),
        ("dead", 4),
    ]
    again = problem(writer.post(f"/v1/deliveries/{target}/retry"), 409)
    assert "replay its subscription" in again["detail"]
    assert problem(writer.post("/v1/deliveries/987654321/retry"), 404)
    missing = f"/v1/subscriptions/{uuid.uuid4()}"
    assert problem(reader.get(f"{missing}/deliveries"), 404)
    assert problem(writer.post(f"{missing}/enable"), 404)
    assert problem(writer.post(f"{missing}/replay", json={"after": 0}), 404)


def test_replay_needs_write_and_a_cursor_older_than_the_retained_events_is_410(
    api: LiveApi, writer: httpx.Client, reader: httpx.Client, receiver: WebhookReceiver, tag: str
) -> None:
    """Replay queues the matching events after the cursor (write scope); once finished events
    are pruned, a cursor before the oldest retained one is 410 Gone (the replay could not be
    complete), and the oldest retained cursor still works."""
    start = last_seq(writer)
    subscription, secret = subscribe(writer, receiver.url, tag, types=["instance.created"])
    receiver.respond = Verifying(secret)
    launch(writer, tag, 2)
    finished_log(writer, subscription, 2)
    path = f"/v1/subscriptions/{subscription}/replay"
    assert problem(reader.post(path, json={"after": start}), 403)
    replayed = writer.post(path, json={"after": start, "limit": 1})
    assert (replayed.status_code, replayed.json()["queued"], replayed.json()["more"]) == (
        202,
        1,
        True,
    )
    finished_log(writer, subscription, 2)

    prune_events(api.cs.store, utcnow() + timedelta(seconds=1))
    oldest = int(writer.get("/v1/events", params={"limit": 1}).json()["items"][0]["seq"])
    gone = problem(writer.post(path, json={"after": start}), 410)
    assert f"events up to {oldest - 1} are no longer retained" in gone["detail"]
    assert writer.post(path, json={"after": oldest - 1}).status_code == 202


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``cloudstate serve`` that may post to loopback, retrying twice 50 ms apart: the
    environment for CLI commands against it."""
    home = tmp_path_factory.mktemp("cli-home")
    port = free_port()
    env = {
        **clean_env(),
        "CLOUDSTATE_HOME": str(home),
        "CLOUDSTATE_HOST": "127.0.0.1",
        "CLOUDSTATE_PORT": str(port),
        "CLOUDSTATE_SIMULATOR_FAST": "true",
        "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.2",
        "CLOUDSTATE_WEBHOOK_ALLOW": "127.0.0.1",
        "CLOUDSTATE_DELIVERY_RETRY_SCHEDULE": "0,0.05",
        "CLOUDSTATE_DELIVERY_BREAKER_THRESHOLD": "1000000",
        "CLOUDSTATE_LOG_FORMAT": "text",
    }
    with (home / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [*cloudstate_command(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _ready(url), timeout=30, interval=0.1, what="cloudstate serve")
            token = (home / "token").read_text().strip()
            yield {
                **clean_env(),
                "CLOUDSTATE_URL": url,
                "CLOUDSTATE_TOKEN": token,
                "COLUMNS": "160",
            }
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl-C: how serve is meant to stop
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    return False


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cloudstate_command(), *args], env=env, capture_output=True, text=True, timeout=60
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_cli_adds_lists_shows_and_removes_subscriptions(
    served: dict[str, str], receiver: WebhookReceiver, tag: str
) -> None:
    """``subscription add`` prints the new secret alone on stdout (JSON: the subscription with
    it); ``list`` and ``show`` never show it; ``rm`` removes it (``show`` is then exit 1)."""
    added = cli(served, "subscription", "add", receiver.url, "--label", f"test={tag}")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().startswith("whsec_")
    assert "shown once" in added.stderr
    made = cli_json(
        served, "subscription", "add", receiver.url, "-t", "instance.created", "-l", f"test={tag}"
    )
    assert made["secret"].startswith("whsec_")
    assert made["filters"]["types"] == ["instance.created"]
    assert made["filters"]["labels"] == {"test": tag}

    listed = cli_json(served, "subscription", "list")
    shown = cli_json(served, "subscription", "show", made["id"])
    assert made["id"] in {s["id"] for s in listed}
    assert all(s["secret"] is None for s in listed)
    assert (shown["url"], shown["enabled"], shown["secret"]) == (receiver.url, True, None)
    table = cli(served, "subscription", "list")
    assert made["id"] in table.stdout
    assert made["secret"] not in table.stdout

    assert cli(served, "subscription", "rm", made["id"]).returncode == 0
    gone = cli(served, "subscription", "show", made["id"])
    assert gone.returncode == 1
    assert "not found" in gone.stderr


def test_the_cli_lists_deliveries_retries_replays_rotates_and_enables(
    served: dict[str, str], receiver: WebhookReceiver, tag: str
) -> None:
    """A delivery dies (two 500s); ``deliveries --status dead`` lists it; once the receiver is
    back, ``retry`` delivers it (3 attempts in all); ``replay --after`` queues it again;
    ``rotate-secret`` prints a new secret; ``enable`` answers the enabled subscription."""
    receiver.respond = lambda _request: (500, 0.0)
    with Client(served["CLOUDSTATE_URL"], served["CLOUDSTATE_TOKEN"]) as api:
        start = api.last_event_seq()
        made = api.subscribe(
            receiver.url, filters={"labels": {"test": tag}, "types": ["instance.created"]}
        )
        api.launch(
            account="simulator",
            image="img-basic",
            hardware_profile="small",
            labels={"test": tag},
            instances=[{"uuid": str(uuid.uuid4())}],
        )
        wait_until(lambda: api.deliveries(made.id, status="dead").items, timeout=10, what="dead")
    sid = str(made.id)

    [dead] = cli_json(served, "subscription", "deliveries", sid, "--status", "dead")["items"]
    assert (dead["attempts"], dead["last_status_code"]) == (2, 500)
    receiver.respond = lambda _request: (200, 0.0)
    retried = cli_json(served, "subscription", "retry", str(dead["id"]))
    assert (retried["id"], retried["status"], retried["attempts"]) == (dead["id"], "pending", 2)

    def delivered() -> list[dict[str, Any]]:
        page = cli_json(served, "subscription", "deliveries", sid, "--status", "delivered")
        return list(page["items"])

    [done] = wait_until(delivered, timeout=15, interval=0.2, what="delivered")
    assert (done["attempts"], done["last_status_code"]) == (3, 200)

    replayed, rotated, enabled = (
        cli_json(served, "subscription", "replay", sid, "--after", str(start)),
        cli_json(served, "subscription", "rotate-secret", sid, "--grace", "60"),
        cli_json(served, "subscription", "enable", sid),
    )
    assert (replayed["queued"], replayed["reset"], replayed["through"]) == (1, 1, dead["event_seq"])
    assert rotated["secret"].startswith("whsec_")
    assert rotated["previous_secret_expires_at"] is not None
    assert (enabled["id"], enabled["enabled"]) == (sid, True)
    table = cli(served, "subscription", "deliveries", sid)
    assert table.returncode == 0
    assert "instance.created" in table.stdout
    assert str(dead["event_seq"]) in table.stdout

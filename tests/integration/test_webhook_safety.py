"""Callback URLs never reach internal addresses unless the operator allows them: refused at
registration (the API, over real HTTP) and again at every delivery (the real sender and
deliverer, real SQLite and PostgreSQL, real receivers on loopback), however the address is
spelled or whatever name resolves to it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from test_deliverer import _deliveries, _launch, _subscribe, _tuned

from cloudstate.api import ApiContext, create_app
from cloudstate.config import Settings, load_settings
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.deliverer import Deliverer
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.loop import run_burst
from cloudstate.exceptions import ConfigurationError, ValidationError
from cloudstate.service import accounts
from cloudstate.service.tokens import create_token
from cloudstate.store import Store
from cloudstate.testing import WebhookReceiver, wait_until
from cloudstate.webhooks import WebhookPolicy
from cloudstate.webhooks.safety import PinnedResolver, RefusedAddress

STRICT = WebhookPolicy()
HINT = (
    "; an operator can permit it with CLOUDSTATE_WEBHOOK_ALLOW in the environment of the "
    "cloudstate server (serve, api and worker), not of this client"
)

REFUSED = {  # URL → why, for URLs judged without DNS or through the system resolver
    "http://127.0.0.1:8080/hook": "refused: 127.0.0.1 is a loopback address",
    "http://10.0.0.1/hook": "refused: 10.0.0.1 is a private address",
    "https://172.16.5.4/hook": "refused: 172.16.5.4 is a private address",
    "http://192.168.1.10:9000/": "refused: 192.168.1.10 is a private address",
    "http://169.254.169.254/latest/meta-data/": (
        "refused: 169.254.169.254 is the cloud metadata address"
    ),
    "http://169.254.10.1/": "refused: 169.254.10.1 is a link-local address",
    "http://[::1]:8080/hook": "refused: ::1 is a loopback address",
    "http://[fd00:ec2::254]/": "refused: fd00:ec2::254 is the cloud metadata address",
    "http://[fc00::1]/": "refused: fc00::1 is a private address",
    "http://[fe80::1]/": "refused: fe80::1 is a link-local address",
    "http://[::ffff:10.0.0.1]/": "refused: ::ffff:a00:1 (10.0.0.1) is a private address",
    "http://0.0.0.0:8080/": "refused: 0.0.0.0 is an unspecified address",
    "http://224.0.0.1/": "refused: 224.0.0.1 is a multicast address",
    "http://100.64.0.1/": "refused: 100.64.0.1 is not a public address",
    "http://0x7f.1/": "refused: 0x7f.1 resolves to 127.0.0.1, a loopback address",
    "http://2130706433/": "refused: 2130706433 resolves to 127.0.0.1, a loopback address",
    "http://127.1/": "refused: 127.1 resolves to 127.0.0.1, a loopback address",
    "http://0177.0.0.1/": "refused: 0177.0.0.1 resolves to 127.0.0.1, a loopback address",
    "http://localhost:8080/": "refused: localhost resolves to 127.0.0.1, a loopback address",
}


# the policy ----------------------------------------------------------------------------------


class TestPolicy:
    @pytest.mark.parametrize(("url", "why"), REFUSED.items())
    def test_internal_addresses_are_refused_however_spelled(self, url: str, why: str) -> None:
        assert STRICT.url_problem(url) == why + HINT

    @pytest.mark.parametrize("url", ["ftp://example.com/h", "hook", "http://", "http://user@/h"])
    def test_a_url_must_be_http_with_a_host(self, url: str) -> None:
        assert STRICT.url_problem(url) == "must be an http:// or https:// URL with a host"

    @pytest.mark.parametrize(
        "url", ["https://93.184.216.34/hook", "http://[2606:4700::1111]:8443/", "http://x.invalid/"]
    )
    def test_public_addresses_and_names_that_do_not_resolve_yet_are_accepted(
        self, url: str
    ) -> None:
        """A name that does not resolve cannot be judged now; every delivery checks again."""
        assert STRICT.url_problem(url) is None

    def test_the_allow_list_opens_exceptions_by_network_or_exact_name(self) -> None:
        policy = WebhookPolicy.parse(["127.0.0.1", "10.0.0.0/8", "LOCALHOST."])
        for url in ("http://127.0.0.1:1/", "http://10.9.8.7/", "http://localhost/"):
            assert policy.url_problem(url) is None
        assert policy.url_problem("http://127.0.0.2/") == (
            "refused: 127.0.0.2 is a loopback address" + HINT
        )
        assert policy.url_problem("http://169.254.169.254/") is not None

    def test_the_allow_list_comes_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, home: Path
    ) -> None:
        monkeypatch.setenv("CLOUDSTATE_WEBHOOK_ALLOW", "127.0.0.1, 10.1.0.0/16,hooks.internal")
        assert load_settings(home=home).webhook_allow == [
            "127.0.0.1",
            "10.1.0.0/16",
            "hooks.internal",
        ]
        monkeypatch.setenv("CLOUDSTATE_WEBHOOK_ALLOW", "http://hooks.internal/")
        with pytest.raises(ConfigurationError, match="CLOUDSTATE_WEBHOOK_ALLOW"):
            load_settings(home=home)

    def test_the_resolver_hands_aiohttp_only_allowed_addresses(self) -> None:
        """The connection is pinned to what was checked: a refused name yields no address."""
        with pytest.raises(RefusedAddress, match=r"localhost resolves to 127\.0\.0\.1"):
            asyncio.run(PinnedResolver(STRICT).resolve("localhost", 80))
        allowed = asyncio.run(
            PinnedResolver(WebhookPolicy.parse(["127.0.0.0/8"])).resolve("localhost", 80)
        )
        assert {(r["host"], r["port"]) for r in allowed} == {("127.0.0.1", 80)}


# registration --------------------------------------------------------------------------------


@contextlib.contextmanager
def _api(settings: Settings) -> Iterator[httpx.Client]:
    """The real app, served by uvicorn on a loopback port, with a ``write`` token."""
    store = Store.from_settings(settings)
    store.upgrade()
    pool = DriverPool(store, settings.home)
    app = create_app(ApiContext(settings, store, pool))
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _, token = create_token(store, "hooks", ["write"])
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_until(lambda: server.started, what="the API to start")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        pool.close()
        store.close()


def _problem(response: httpx.Response) -> tuple[set[str], str]:
    assert response.status_code == 422, response.text
    body = response.json()
    return {error["field"] for error in body["errors"]}, body["detail"]


NOBODY = {"instances": [str(uuid.uuid4())]}


class TestRegistration:
    def test_internal_urls_are_a_422_on_url_when_created_or_updated(self, home: Path) -> None:
        with _api(load_settings(home=home)) as api:
            for url in ("http://10.0.0.1/h", "http://[::1]:9/h", "http://localhost:9/h"):
                fields, detail = _problem(api.post("/v1/subscriptions", json={"url": url}))
                assert fields == {"url"}
                assert detail.startswith("url: refused: ")
            created = api.post(
                "/v1/subscriptions", json={"url": "https://93.184.216.34/h", "filters": NOBODY}
            )
            assert created.status_code == 201, created.text
            path = f"/v1/subscriptions/{created.json()['id']}"
            patch = {"url": "http://169.254.169.254/latest/meta-data/"}
            fields, detail = _problem(api.patch(path, json=patch))
            assert (fields, detail) == (
                {"url"},
                "url: refused: 169.254.169.254 is the cloud metadata address" + HINT,
            )

    def test_the_allow_list_permits_loopback(self, home: Path) -> None:
        with _api(load_settings(home=home, webhook_allow="127.0.0.1")) as api:
            body = {"url": "http://127.0.0.1:9/h", "filters": NOBODY}
            assert api.post("/v1/subscriptions", json=body).status_code == 201
            fields, _ = _problem(api.post("/v1/subscriptions", json={"url": "http://10.0.0.1/"}))
            assert fields == {"url"}


# delivery ------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def make_deliverer(store: Store, settings: Settings) -> Iterator[Callable[..., Deliverer]]:
    made: list[Deliverer] = []

    def make(**overrides: Any) -> Deliverer:
        deliverer = Deliverer(
            store,
            _tuned(settings, **overrides),
            worker_id="worker-1",
            callables=CallableRegistry(),
        )
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        deliverer.close()


class _Redirect(BaseHTTPRequestHandler):
    """Answers every POST with a 302 to an internal address."""

    requests: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.requests.append(self.path)
        self.send_response(302)
        self.send_header("Location", "http://10.0.0.1/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def redirector() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []
    handler = type("Handler", (_Redirect,), {"requests": requests})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", requests
        server.shutdown()


class TestDelivery:
    def test_internal_targets_are_refused_at_delivery_time_too(
        self,
        store: Store,
        make_deliverer: Callable[..., Deliverer],
        receiver: WebhookReceiver,
    ) -> None:
        """Subscriptions whose host is (or now resolves to) an internal address, as if DNS
        changed after registration: each attempt fails without a request, with the reason,
        retried on the schedule and then dead-lettered. Refusals never trip a breaker."""
        port = receiver.port
        targets = {
            receiver.url: "refused: 127.0.0.1 is a loopback address",
            f"http://localhost:{port}/hook": (
                "refused: localhost resolves to 127.0.0.1, a loopback address"
            ),
            f"http://0x7f.1:{port}/hook": (
                "refused: 0x7f.1 resolves to 127.0.0.1, a loopback address"
            ),
            f"http://[::1]:{port}/hook": "refused: ::1 is a loopback address",
            "http://10.0.0.1:9/hook": "refused: 10.0.0.1 is a private address",
            "http://169.254.169.254/latest/meta-data/": (
                "refused: 169.254.169.254 is the cloud metadata address"
            ),
        }
        subscriptions = {url: _subscribe(store, "http", url) for url in targets}
        _launch(store, 3)
        deliverer = make_deliverer(
            webhook_allow=[], delivery_retry_schedule="0,0.05", delivery_breaker_threshold=1
        )

        assert run_burst([deliverer], timeout=10)

        assert receiver.requests == []
        for url, why in targets.items():
            rows = _deliveries(store, subscriptions[url])
            assert {(row.status, row.attempts, row.last_error) for row in rows} == {
                ("dead", 2, why)
            }, url

    def test_with_the_allow_list_the_loopback_receiver_gets_its_events(
        self,
        store: Store,
        make_deliverer: Callable[..., Deliverer],
        receiver: WebhookReceiver,
    ) -> None:
        by_address = _subscribe(store, "http", receiver.url)
        by_name = _subscribe(store, "http", f"http://localhost:{receiver.port}/named")
        _launch(store, 2)

        deliverer = make_deliverer(webhook_allow=["127.0.0.1"])
        assert run_burst([deliverer], timeout=10)

        assert len(receiver.requests) == 4
        for subscription in (by_address, by_name):
            assert {row.status for row in _deliveries(store, subscription)} == {"delivered"}

    def test_a_redirect_to_an_internal_address_is_not_followed(
        self,
        store: Store,
        make_deliverer: Callable[..., Deliverer],
        redirector: tuple[str, list[str]],
    ) -> None:
        """The allowed receiver answers 302 to 10.0.0.1: recorded as a failure, never followed."""
        url, requests = redirector
        subscription = _subscribe(store, "http", url)
        _launch(store, 1)

        assert run_burst([make_deliverer(delivery_retry_schedule="0")], timeout=10)

        assert requests == ["/hook"]
        [row] = _deliveries(store, subscription)
        assert (row.status, row.last_status_code, row.last_error) == ("dead", 302, "HTTP 302")


def test_every_entry_point_gets_the_url_policy_and_a_generated_secret(store: Store) -> None:
    """The rules live in the service, not in the API's route: a webhook to loopback is
    refused naming ``url`` (unless the policy allows it), one without a secret gets a
    generated ``whsec_`` secret, and a new URL on an existing webhook is checked too."""
    with pytest.raises(ValidationError) as refused:
        accounts.add_subscription(store, "http", "http://127.0.0.1:9/hook", policy=WebhookPolicy())
    assert refused.value.errors[0].field == "url"
    allowed = WebhookPolicy.parse(["127.0.0.1"])
    view = accounts.add_subscription(store, "http", "http://127.0.0.1:9/hook", policy=allowed)
    assert (view.secret or "").startswith("whsec_")
    with pytest.raises(ValidationError):
        accounts.update_subscription(
            store, view.id, target="http://169.254.169.254/x", policy=allowed
        )

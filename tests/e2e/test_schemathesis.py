"""Schemathesis against the live API: every operation of ``/openapi.json``, generated input.

The document is loaded from a running server (``LiveApi``), so whatever route exists is fuzzed;
a new one cannot be forgotten. Each operation gets schema-valid requests (half of them, for an
operation with a path id, aimed at a resource that really exists, so the code behind the 404
runs too) and schema-invalid ones, all with a valid admin token. Every response must be no 5xx,
a documented status, of a documented content type, with a body that matches the schema.

Operations run reads first, then creates and changes, then deletions and revocations, so a
destructive call cannot starve the others of the resources they aim at. Hypothesis is
derandomized: the same requests are sent on every run, and a failure reproduces.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from api_server import LiveApi, live_api_on
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloudstate.testing import wait_until

pytestmark = [
    pytest.mark.slow,
    # Hypothesis flags any change to the global ``random`` state while a case is drawn; the
    # server's own threads (backoff jitter, the simulator) change it concurrently, in-process.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

RUNS = {"sqlite": (42, 2000), "postgresql": (12, 550)}
"""Per database: generated cases per operation and mode, and the requests that makes at least
over the document's operations. The full run is on SQLite; PostgreSQL's shorter one is for
what only it refuses (NUL characters, NaN in JSONB)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
STREAM_SECONDS = 0.75
"""How long an event stream that answered 200 is read before the client hangs up."""
RANK = {"GET": 0, "POST": 1, "PATCH": 2, "DELETE": 3}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    """The live API on each database in turn (PostgreSQL refuses text SQLite stores)."""
    with live_api_on(request, tmp_path_factory, "schemathesis") as live:
        yield live


@pytest.fixture(scope="module")
def known(api: LiveApi) -> dict[str, str]:
    """Path ids that name real resources: an order and its running instances, the simulator
    account, a subscription with deliveries, and a token that may be revoked."""
    admin = api.client(api.tokens.admin)
    uuids = [str(uuid.uuid4()) for _ in range(3)]
    order = {
        "account": "simulator",
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": u} for u in uuids],
    }
    response = admin.post("/v1/orders", json=order)
    assert response.status_code == 202, response.text
    subscription = admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
    assert subscription.status_code == 201, subscription.text
    subscription_id = subscription.json()["id"]
    token = admin.post("/v1/tokens", json={"name": "expendable", "scopes": ["read"]})
    assert token.status_code == 201, token.text

    def running() -> bool:
        views = [admin.get(f"/v1/instances/{u}").json() for u in uuids]
        return all(v["state"] == "running" and v["operation"] is None for v in views)

    wait_until(running, timeout=20, interval=0.1, what="the known instances running")
    delivery = wait_until(
        lambda: _first_delivery(admin, subscription_id), timeout=10, what="a delivery"
    )
    return {
        "order_id": response.json()["id"],
        "instance_uuid": uuids[0],
        "name": "simulator",
        "subscription_id": subscription_id,
        "delivery_id": str(delivery),
        "token_name": "expendable",
    }


def _first_delivery(client: httpx.Client, subscription_id: str) -> int | None:
    items = client.get(f"/v1/subscriptions/{subscription_id}/deliveries").json()["items"]
    return int(items[0]["id"]) if items else None


def test_generated_requests_get_no_5xx_and_only_documented_conforming_answers(
    api: LiveApi, known: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """At least 2,000 generated requests (on SQLite; 550 more on PostgreSQL) over every
    operation of the document, valid and invalid, each with an admin token: no 5xx, every
    status and content type documented for its operation, every body valid against the
    operation's response schema, and no error logged by the server (an exception after a
    stream's 200 is no 5xx, but a broken answer)."""
    examples, minimum = RUNS["postgresql" if "database_url" in api.settings else "sqlite"]
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=_rank)
    auth = {"Authorization": f"Bearer {api.tokens.admin}"}
    sent: Counter[str] = Counter()
    failures: dict[str, str] = {}
    session = requests.Session()
    started = time.monotonic()
    for operation in operations:
        for mode, strategy in _strategies(operation, auth, known):
            test = _fuzz(strategy, examples, lambda c: _send(c, session, api.url, auth, sent))
            try:
                test()
            except Unsatisfiable:
                # Every input of the operation accepts any string (``/v1/accounts/{name}``):
                # nothing can be made invalid, and its valid cases ran above.
                assert mode == "invalid", operation.label
            except (Exception, BaseExceptionGroup) as exc:  # a report for each that failed
                failures[f"{operation.label} ({mode})"] = _explain(exc)
    elapsed = time.monotonic() - started
    assert failures == {}, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == []
    assert set(sent) == {operation.label for operation in operations}
    total = sum(sent.values())
    print(f"\nschemathesis: {total} requests over {len(operations)} operations, {elapsed:.0f} s")
    assert total >= minimum, f"{total} requests in {elapsed:.0f} s: {dict(sent)}"


def _rank(operation: Any) -> tuple[int, bool]:
    """Reads, then creates and changes, then deletions; revoking a token comes very last."""
    return RANK.get(operation.method.upper(), 1), operation.path.startswith("/v1/tokens/")


def _strategies(
    operation: Any, auth: dict[str, str], known: dict[str, str]
) -> Iterator[tuple[str, st.SearchStrategy[Case]]]:
    """Valid cases (half on known resources, where the path names one) and invalid ones. An
    operation with no input but the token has nothing to make invalid: valid cases only."""
    valid = operation.as_strategy(GenerationMode.POSITIVE, headers=auth)
    if (operation.method.upper(), operation.path) in GROUNDED:
        real = operation.as_strategy(GenerationMode.POSITIVE, headers=auth).map(_grounded)
        valid = st.one_of(valid, real)
    ids = _known_ids(operation, known)
    if ids:
        real = operation.as_strategy(GenerationMode.POSITIVE, headers=auth, path_parameters=ids)
        valid = st.one_of(valid, real)
    yield "valid", valid
    inputs = [p for p in operation.iter_parameters() if p.name.lower() != "authorization"]
    if inputs or list(operation.body):
        yield "invalid", operation.as_strategy(GenerationMode.NEGATIVE, headers=auth)


GROUNDED: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/orders"): {
        "account": "simulator",
        "image": "img-basic",
        "hardware_profile": "small",
    },
    ("POST", "/v1/accounts"): {"provider": "simulator", "config": {}},
    ("POST", "/v1/subscriptions"): {"url": "http://127.0.0.1:9/fuzz"},
}
"""Body fields that must name something real, set to real names so that generated orders,
accounts and subscriptions get past the lookups and into the code that creates them (the
document cannot say which names exist, so random ones are all refused)."""
ORDER_LOOKUPS = ("account", "accounts", "after", "credentials", "credentials_ttl")
"""Order fields that name other things (accounts, instances); dropped from grounded orders."""


def _grounded(case: Case) -> Case:
    """``case`` with ``GROUNDED``'s names; an order keeps at most three instances."""
    body = case.body
    if isinstance(body, dict):
        if case.operation.path == "/v1/accounts":  # a valid account name, from the random one
            body["name"] = "fuzz-" + hashlib.sha256(str(body.get("name")).encode()).hexdigest()[:8]
        if case.operation.path == "/v1/orders":
            for name in ORDER_LOOKUPS:
                body.pop(name, None)
            body["instances"] = [
                {k: v for k, v in item.items() if k not in ORDER_LOOKUPS}
                for item in body.get("instances", [])[:3]
            ]
        body.update(GROUNDED[case.operation.method.upper(), case.operation.path])
    return case


def _known_ids(operation: Any, known: dict[str, str]) -> dict[str, str]:
    names = [p.name for p in operation.path_parameters]
    if operation.path.startswith("/v1/tokens/"):
        return {"name": known["token_name"]}
    return {name: known[name] for name in names if name in known}


def _fuzz(
    strategy: st.SearchStrategy[Case], examples: int, send: Callable[[Case], None]
) -> Callable[[], None]:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(case=strategy)
    def run(case: Case) -> None:
        send(case)

    return run


def _send(
    case: Case, session: requests.Session, base_url: str, auth: dict[str, str], sent: Counter[str]
) -> None:
    """One generated request, checked. An event stream that answers 200 never ends by itself:
    it is read for ``STREAM_SECONDS``, then checked on what arrived."""
    stream = case.operation.path.endswith("/stream")
    timeout = STREAM_SECONDS if stream else 30.0
    response = case.call(base_url=base_url, session=session, headers=auth, timeout=timeout)
    sent[case.operation.label] += 1
    case.validate_response(response, checks=CHECKS, headers=auth)


def _explain(exc: BaseException) -> str:
    """The failure and, for a group (schemathesis's checks, Hypothesis's flaky reports), each
    failure inside it."""
    inner = exc.exceptions if isinstance(exc, BaseExceptionGroup) else ()
    return "\n".join([f"{type(exc).__name__}: {exc}", *(_explain(e) for e in inner)])

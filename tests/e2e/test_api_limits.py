"""The API under callers who hold it open: ``wait: true`` actions hold no request thread, and
``/healthz`` never queues behind them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_server import LiveApi

from cloudstate.testing import simulated_cloud, wait_until

WAITS = 60
"""More concurrent waits than the API has request threads (AnyIO's default limiter: 40)."""


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("limits")) as live:
        yield live


def running(api: LiveApi, count: int) -> list[str]:
    writer = api.client(api.tokens.write)
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    order = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
    answer = writer.post("/v1/orders", json={**order, "instances": [{"uuid": u} for u in uuids]})
    assert answer.status_code == 202, answer.text

    def all_running() -> bool:
        page = writer.get("/v1/instances", params={"limit": 1000}).json()["items"]
        states = {i["uuid"]: (i["state"], i["operation"]) for i in page}
        return all(states.get(u) == ("running", None) for u in uuids)

    wait_until(all_running, timeout=60, interval=0.2, what=f"{count} instances running")
    return uuids


def test_waiting_actions_hold_no_request_thread_and_health_never_queues_behind_them(
    api: LiveApi,
) -> None:
    """60 ``destroy`` actions with ``wait: true`` against a cloud that has gone away (so none
    can finish: each waits its whole timeout) are more than the API's request threads; while
    they wait, ``/healthz`` and an ordinary read each answer within a second, and every wait
    ends as it should, in 504 at its timeout."""
    uuids = running(api, WAITS)
    with simulated_cloud(api.cs.settings.simulator_path) as cloud:
        cloud.configure(unreachable=True)
        timeout = 6.0
        limits = httpx.Limits(max_connections=WAITS + 5)
        with (
            httpx.Client(
                base_url=api.url,
                headers={"Authorization": f"Bearer {api.tokens.write}"},
                timeout=timeout + 30,
                limits=limits,
            ) as waiter,
            ThreadPoolExecutor(WAITS) as pool,
        ):
            body = {"action": "destroy", "wait": True, "timeout": timeout}
            started = time.monotonic()
            futures = [
                pool.submit(waiter.post, f"/v1/instances/{u}/actions", json=body) for u in uuids
            ]
            time.sleep(2.0)  # every wait is in, holding whatever it holds
            assert not any(f.done() for f in futures)
            reader = api.client(api.tokens.read)
            probes = []
            for _ in range(3):
                began = time.monotonic()
                assert api.client().get("/healthz").status_code == 200
                health = time.monotonic() - began
                began = time.monotonic()
                assert reader.get(f"/v1/instances/{uuids[0]}").status_code == 200
                probes.append((health, time.monotonic() - began))
            answers = [f.result() for f in futures]
            took = time.monotonic() - started
        cloud.configure(unreachable=False)
    assert max(h for h, _ in probes) < 1.0, probes
    assert max(r for _, r in probes) < 1.0, probes
    assert {a.status_code for a in answers} == {504}, {a.status_code for a in answers}
    assert took < timeout + 10  # the waits ran side by side, not a thread's worth at a time

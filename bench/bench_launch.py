"""Launch: a 1,000-instance order accepted by the API, and all of it running on a zero-latency
simulator, against what the same work costs without cloudstate.

Setup: ``cloudstate api`` and two ``cloudstate worker`` processes on one throwaway PostgreSQL
database, one simulator account (no call latency; instances boot in 50 ms, as in
``simulator_fast``), default settings otherwise (``launch_batch_size`` 50,
``reconcile_fast_interval`` 1 s). A 10-instance order is launched first to warm the processes.

Measured:

* accepted: the ``POST /v1/orders`` round trip for 1,000 instances, from this process.
  Reference: the same body POSTed to a bare FastAPI endpoint that parses it and inserts 1,000
  rows with one psycopg ``executemany`` (``bench/_reference_api.py``).
* all running: from sending the order until the order's state is ``running`` (polled in
  PostgreSQL every 20 ms). Reference: the simulator alone doing the same work through its
  driver: ``create_many`` in batches of 50, then listings until all 1,000 are running.

Usage: ``python bench/bench_launch.py [--quick]`` (quick: 200 instances)
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _common import (
    BENCH,
    PYTHON,
    Children,
    Reporter,
    add_simulator_account,
    below,
    bench_main,
    env_for,
    free_port,
    median,
    prepared_store,
    settings,
    simulator,
    wait_for,
)
from sqlalchemy import func, select

from cloudstate.providers.base import LaunchSpec
from cloudstate.providers.simulator import SimulatorDriver
from cloudstate.service.tokens import create_token
from cloudstate.store import Store
from cloudstate.store.tables import Instance, Order

TARGET_ACCEPT = 1.0
TARGET_RUNNING = 10.0
FULL_SIZE = 1_000
QUICK_SIZE = 200
BOOT_SECONDS = 0.05
BATCH = 50


def order_body(size: int, account: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(uuid.uuid4()), "name": f"web-{n}"} for n in range(size)],
    }
    if account:
        body["account"] = account
    return body


def serving(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def order_state(store: Store, order_id: str) -> tuple[str, int]:
    with store.read() as session:
        state = session.scalar(select(Order.state).where(Order.id == uuid.UUID(order_id)))
        running = session.scalar(
            select(func.count())
            .select_from(Instance)
            .where(Instance.order_id == uuid.UUID(order_id), Instance.state == "running")
        )
    return str(state), int(running or 0)


def launch(api: str, token: str, store: Store, size: int) -> tuple[float, float]:
    """POST an order, wait until it is running; returns (accept seconds, running seconds)."""
    body = order_body(size, "sim")
    headers = {"authorization": f"Bearer {token}"}
    started = time.perf_counter()
    response = httpx.post(f"{api}/v1/orders", json=body, headers=headers, timeout=60)
    accepted = time.perf_counter() - started
    response.raise_for_status()
    order_id = response.json()["id"]

    def running() -> bool:
        state, count = order_state(store, order_id)
        if state not in ("accepted", "launching", "running"):
            raise RuntimeError(f"the order ended {state} with {count} running")
        return state == "running"

    wait_for(running, 120.0, "the order to be running", interval=0.02)
    return accepted, time.perf_counter() - started


def reference_accept(ref: str, size: int) -> float:
    body = order_body(size, None)
    started = time.perf_counter()
    httpx.post(f"{ref}/orders", json=body, timeout=60).raise_for_status()
    return time.perf_counter() - started


def reference_running(cloud_path: Path, size: int) -> float:
    """The simulator alone: create in batches of 50, then list until all are running."""
    cloud = simulator(cloud_path, boot_seconds=BOOT_SECONDS)
    driver = SimulatorDriver(cloud, "reference")
    specs = [LaunchSpec(uuid.uuid4(), f"ref-{n}", "img-basic", "small") for n in range(size)]
    started = time.perf_counter()
    for start in range(0, size, BATCH):
        driver.create_many(specs[start : start + BATCH])
    while True:
        running, token = 0, None
        while True:
            page = driver.list_page(token)
            running += sum(1 for item in page.instances if item.raw_state == "running")
            token = page.next_token
            if token is None:
                break
        if running >= size:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    cloud.close()
    return elapsed


def run(opts: Any, reporter: Reporter, home: Path, url: str) -> None:
    size = QUICK_SIZE if opts.quick else FULL_SIZE
    rounds = 1 if opts.quick else 3
    config = settings(home, url)
    store = prepared_store(config)
    cloud_path = home / "cloud.db"
    simulator(cloud_path, boot_seconds=BOOT_SECONDS).close()
    add_simulator_account(store, "sim", cloud_path, "sim")
    _, token = create_token(store, "bench", ["write"])
    api_port, ref_port = free_port(), free_port()
    api, ref = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ref_port}"
    with Children(home / "logs") as children:
        env = env_for(config)
        children.start("api", [PYTHON, "-m", "cloudstate", "api", "--port", str(api_port)], env)
        for n in (1, 2):
            children.start(f"worker-{n}", [PYTHON, "-m", "cloudstate", "worker"], env)
        children.start("reference", [PYTHON, str(BENCH / "_reference_api.py"), str(ref_port), url])
        wait_for(lambda: serving(f"{api}/readyz") and serving(f"{ref}/hello"), 120, "the servers")
        launch(api, token, store, 10)  # warm-up
        reference_accept(ref, 10)
        runs = [launch(api, token, store, size) for _ in range(rounds)]
        children.check()
        ref_accept = median([reference_accept(ref, size) for _ in range(rounds)])
    ref_running = median([reference_running(home / "reference.db", size) for _ in range(rounds)])
    store.close()
    accepted = median([a for a, _ in runs])
    running = median([r for _, r in runs])
    note = f"{size:,} instances, median of {rounds}"
    target, ok = below(accepted, TARGET_ACCEPT)
    reporter.report(
        "launch.order_accepted_s",
        accepted,
        "s",
        target if not opts.quick else f"(< {TARGET_ACCEPT:g} at 1,000)",
        ok if not opts.quick else None,
        reference="bare FastAPI + psycopg executemany",
        reference_figure=ref_accept,
        ratio=ref_accept / accepted,
        note=note,
    )
    target, ok = below(running, TARGET_RUNNING)
    reporter.report(
        "launch.all_running_s",
        running,
        "s",
        target if not opts.quick else f"(< {TARGET_RUNNING:g} at 1,000)",
        ok if not opts.quick else None,
        reference="the simulator alone (create_many in 50s, list)",
        reference_figure=ref_running,
        ratio=ref_running / running,
        note=note + "; 2 workers",
    )


def main() -> None:
    bench_main("launch", __doc__ or "", run)


if __name__ == "__main__":
    main()

"""API: ``GET /v1/instances/{uuid}`` and a 100-item list page, requests per second under load
from a separate process, against a bare FastAPI "hello" endpoint loaded the same way.

Setup (not timed): 1,000 running instances tracked in PostgreSQL, a read token, and
``cloudstate api`` started as its own process (one uvicorn process, as the command runs it).

Load: ``wrk`` with one thread (or ``bench/_loadgen.py`` when wrk is not installed), 16
keep-alive connections, closed loop; the single-instance test cycles through 1,000 UUIDs.
The machine has 2 cores, so the load generator, the API process and PostgreSQL share them;
the reference server shares them the same way, which is why the ratio is the robust figure.

Usage: ``python bench/bench_api.py [--quick]``
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
from _common import (
    BENCH,
    PYTHON,
    Children,
    Load,
    Reporter,
    add_simulator_account,
    at_least,
    bench_main,
    cpu_seconds,
    env_for,
    free_port,
    load,
    prepared_store,
    settings,
    simulator,
    track_fleet,
    wait_for,
)

from cloudstate.service.tokens import create_token

TARGET_GET = 1_500
TARGET_LIST = 300
INSTANCES = 1_000
CONNECTIONS = 16


def serving(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def run(opts: Any, reporter: Reporter, home: Path, url: str) -> None:
    seconds = 3.0 if opts.quick else 15.0
    config = settings(home, url)
    store = prepared_store(config)
    cloud = simulator(home / "cloud.db")
    add_simulator_account(store, "sim", home / "cloud.db", "sim")
    fleet = track_fleet(store, cloud, "sim", "sim", INSTANCES)
    _, token = create_token(store, "bench", ["read"])
    store.close()
    cloud.close()
    api_port, ref_port = free_port(), free_port()
    api, ref = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ref_port}"
    uuids = sorted(str(u) for u in fleet.provider_ids)
    with Children(home / "logs") as children:
        api_proc = children.start(
            "api", [PYTHON, "-m", "cloudstate", "api", "--port", str(api_port)], env_for(config)
        )
        ref_proc = children.start(
            "reference", [PYTHON, str(BENCH / "_reference_api.py"), str(ref_port), url]
        )
        wait_for(lambda: serving(f"{api}/readyz") and serving(f"{ref}/hello"), 120, "the servers")
        get_urls = [f"{api}/v1/instances/{u}" for u in uuids]
        list_urls = [f"{api}/v1/instances?limit=100"]
        check(get_urls[0], token)
        check(list_urls[0], token, items=100)
        warm = 1.0
        load([f"{ref}/hello"], warm, CONNECTIONS, "", home)
        load(get_urls, warm, CONNECTIONS, token, home)
        hello = measured(ref_proc.pid, [f"{ref}/hello"], seconds, "", home)
        got = measured(api_proc.pid, get_urls, seconds, token, home)
        listed = measured(api_proc.pid, list_urls, seconds, token, home)
        children.check()
    report(reporter, hello, got, listed)


def measured(
    pid: int, urls: list[str], seconds: float, token: str, home: Path
) -> tuple[Load, float]:
    """The load's result, and the server process's CPU milliseconds per request."""
    before = cpu_seconds(pid)
    result = load(urls, seconds, CONNECTIONS, token, home)
    return result, (cpu_seconds(pid) - before) * 1000 / max(1, result.requests)


def check(url: str, token: str, items: int | None = None) -> None:
    response = httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    if items is not None and len(response.json()["items"]) != items:
        raise RuntimeError(f"{url} returned {len(response.json()['items'])} items, not {items}")


def report(
    reporter: Reporter,
    hello: tuple[Load, float],
    got: tuple[Load, float],
    listed: tuple[Load, float],
) -> None:
    for result, _ in (hello, got, listed):
        if result.errors > result.requests / 100:
            raise RuntimeError(f"{result.errors} of {result.requests} requests failed")
    reference = "bare FastAPI GET /hello"
    for name, (result, cpu), goal in (
        ("api.get_instance_rps", got, TARGET_GET),
        ("api.list_100_rps", listed, TARGET_LIST),
    ):
        target, ok = at_least(result.rps, goal)
        reporter.report(
            name,
            result.rps,
            "req/s",
            target,
            ok,
            reference=reference,
            reference_figure=hello[0].rps,
            ratio=result.rps / hello[0].rps,
            note=f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; API process CPU "
            f"{cpu:.2f} ms/request (reference {hello[1]:.2f}); {result.tool}, "
            f"{CONNECTIONS} connections",
        )


def main() -> None:
    bench_main("api", __doc__ or "", run)


if __name__ == "__main__":
    main()

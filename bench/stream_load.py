"""GET latency with many open event streams: p50 and p99 of ``GET /v1/instances?limit=1`` with
no stream open, then with ``--streams`` (default 500) open ``/v1/events/stream`` connections.

Setup: ``cloudstate serve`` as its own process on a fresh home (SQLite, the simulator), with
the per-token stream cap raised to the stream count; one admin token holds every stream. The
streams are idle raw connections held by one asyncio loop in this process; the GETs are sent
one after another (closed loop, one keep-alive connection) from this process too.

Usage: ``python bench/stream_load.py [--streams 500] [--requests 400]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

COMMAND = Path(sys.executable).parent / "cloudstate"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def hold_streams(port: int, token: str, count: int, opened: asyncio.Event) -> None:
    """``count`` open event streams until cancelled."""
    writers = []
    request = (
        "GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"a stream was refused: {status!r}")
            writers.append(writer)
        opened.set()
        await asyncio.Event().wait()
    finally:
        for writer in writers:
            writer.close()


def latencies(url: str, token: str, requests: int) -> list[float]:
    taken = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(20):  # warm-up
            client.get("/v1/instances", params={"limit": 1})
        for _ in range(requests):
            began = time.perf_counter()
            answer = client.get("/v1/instances", params={"limit": 1})
            taken.append(time.perf_counter() - began)
            answer.raise_for_status()
    return taken


def summary(taken: list[float]) -> str:
    ordered = sorted(taken)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


async def with_streams(url: str, port: int, token: str, count: int, requests: int) -> list[float]:
    opened = asyncio.Event()
    holder = asyncio.create_task(hold_streams(port, token, count, opened))
    await asyncio.wait_for(opened.wait(), 120)
    await asyncio.sleep(2)  # every stream settled into waiting
    taken = await asyncio.to_thread(latencies, url, token, requests)
    holder.cancel()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--requests", type=int, default=400)
    opts = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cloudstate-streams-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTATE_")}
    env |= {
        "CLOUDSTATE_HOME": str(home),
        "CLOUDSTATE_PORT": str(port),
        "CLOUDSTATE_LOG_LEVEL": "WARNING",
        "CLOUDSTATE_STREAM_MAX_PER_TOKEN": str(opts.streams),
        "CLOUDSTATE_STREAM_MAX_TOTAL": str(opts.streams + 10),
    }
    server = subprocess.Popen(
        [str(COMMAND), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (home / "token").exists() or not _up(url):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("cloudstate serve did not start")
            time.sleep(0.2)
        token = (home / "token").read_text().strip()
        quiet = latencies(url, token, opts.requests)
        loaded = asyncio.run(with_streams(url, port, token, opts.streams, opts.requests))
        print(f"GET /v1/instances?limit=1, {opts.requests} requests, one after another")
        print(f"  no stream open:        {summary(quiet)}")
        print(f"  {opts.streams} streams open:     {summary(loaded)}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # seen after 500 streams: see docs/BENCHMARKS.md
            print("cloudstate serve did not stop within 30 s of SIGTERM; killed", file=sys.stderr)
            server.kill()
            server.wait()
        shutil.rmtree(home, ignore_errors=True)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()

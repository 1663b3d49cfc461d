"""A closed-loop HTTP load generator in its own process, used when ``wrk`` is not installed:
``python bench/_loadgen.py URL[,URL...] SECONDS CONNECTIONS [TOKEN]`` prints one JSON line with
requests, requests per second, errors (non-2xx or failed) and latency percentiles (ms).

Each of CONNECTIONS coroutines sends one request at a time over a keep-alive connection,
cycling through the URLs, for SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def load(urls: list[str], seconds: float, connections: int, token: str) -> dict[str, float]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int, http: aiohttp.ClientSession) -> None:
        nonlocal errors
        n = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with http.get(urls[n % len(urls)], headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - started)
            n += connections

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "errors": errors,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    urls = sys.argv[1].split(",")
    seconds, connections = float(sys.argv[2]), int(sys.argv[3])
    token = sys.argv[4] if len(sys.argv) > 4 else ""
    print(json.dumps(asyncio.run(load(urls, seconds, connections, token))))


if __name__ == "__main__":
    main()

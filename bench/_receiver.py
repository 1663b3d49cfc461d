"""A minimal webhook receiver for the benchmarks, run as its own process (so its CPU is not
charged to the process being measured): ``python bench/_receiver.py PORT``.

Every POST outside ``/_*`` is answered 200 at once and recorded as (arrival time from
``time.time()``, subject, type, the instance's state if any). ``GET /_count`` says how many
arrived, ``GET /_records`` returns them, ``POST /_reset`` forgets them.
"""

from __future__ import annotations

import json
import sys
import time

from aiohttp import web

Record = tuple[float, str, str, str]


def make_app() -> web.Application:
    records: list[Record] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        try:
            event = json.loads(body)
            instance = (event.get("data") or {}).get("instance") or {}
            records.append(
                (now, event.get("subject", ""), event.get("type", ""), instance.get("state", ""))
            )
        except (ValueError, AttributeError):
            records.append((now, "", "", ""))
        return web.Response(status=200)

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"count": len(records)})

    async def dump(_: web.Request) -> web.Response:
        return web.json_response(records)

    async def reset(_: web.Request) -> web.Response:
        records.clear()
        return web.json_response({"count": 0})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/_count", count)
    app.router.add_get("/_records", dump)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    return app


def main() -> None:
    port = int(sys.argv[1])
    web.run_app(make_app(), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()

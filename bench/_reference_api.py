"""The API benchmarks' reference server: a bare FastAPI app on uvicorn, run exactly as
``cloudstate api`` runs its app (one process, no access log), so the difference is cloudstate.

``python bench/_reference_api.py PORT DATABASE_URL``

* ``GET /hello``: a constant JSON answer (the floor of FastAPI + uvicorn on this machine);
* ``POST /orders``: parses a launch order's JSON body and inserts one row per instance with a
  bare psycopg ``executemany`` in one transaction (the floor for accepting an order).
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import psycopg
import uvicorn
from fastapi import Body, FastAPI


def make_app(database_url: str) -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.post("/orders", status_code=202)
    def orders(order: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        rows = [
            (
                uuid.UUID(item["uuid"]),
                item.get("name", ""),
                order["image"],
                order["hardware_profile"],
            )
            for item in order["instances"]
        ]
        with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO reference_instances (uuid, name, image, profile)"
                " VALUES (%s, %s, %s, %s)",
                rows,
            )
        return {"accepted": len(rows)}

    return app


def main() -> None:
    port, database_url = int(sys.argv[1]), sys.argv[2]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS reference_instances (uuid uuid PRIMARY KEY, name text,"
            " image text, profile text, state text NOT NULL DEFAULT 'new',"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
    uvicorn.run(
        make_app(database_url),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()

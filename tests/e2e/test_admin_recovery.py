"""The way back in: the last live admin token cannot be revoked, and an operator with database
access makes a new admin token without the API (``token create --scope admin --local``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from api_server import LiveApi, live_api_on
from server import clean_env, cloudstate_command
from sqlalchemy import update

from cloudstate.store.tables import ApiToken, utcnow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    with live_api_on(request, tmp_path_factory, "recovery") as live:
        yield live


def test_the_last_live_admin_token_cannot_be_revoked(api: LiveApi) -> None:
    """409 problem+json while it is the only live admin token (also when it revokes itself);
    once another admin token exists it can go, and then that one is the last."""
    admin = api.client(api.tokens.admin)
    last = admin.delete("/v1/tokens/test-admin")
    assert last.status_code == 409, last.text
    assert last.headers["content-type"] == "application/problem+json"
    assert "last live admin token" in last.json()["detail"]
    assert "--local" in last.json()["detail"]
    assert admin.get("/v1/tokens").status_code == 200  # still live

    created = admin.post("/v1/tokens", json={"name": "ops", "scopes": ["admin"]})
    assert created.status_code == 201, created.text
    assert admin.delete("/v1/tokens/test-admin").status_code == 200
    ops = api.client(created.json()["token"])
    assert ops.delete("/v1/tokens/ops").status_code == 409
    assert ops.delete("/v1/tokens/test-write").status_code == 200  # other scopes: as before


def test_token_create_local_makes_an_admin_token_on_the_database_without_the_api(
    api: LiveApi,
) -> None:
    """Every admin token revoked (as an older version allowed): the CLI with ``--local`` and
    only the database settings (no URL, no token) prints a new admin token, which the running
    API accepts at once."""
    with api.cs.store.unit_of_work() as uow:
        uow.session.execute(update(ApiToken).values(revoked_at=utcnow()))
        uow.commit()
    assert api.client(api.tokens.admin).get("/v1/tokens").status_code == 401
    settings = api.cs.settings
    env = {
        **clean_env(),
        "CLOUDSTATE_HOME": str(settings.home),
        "CLOUDSTATE_DATABASE_URL": settings.database_url,
        "CLOUDSTATE_URL": "http://127.0.0.1:9",  # nothing there: the API is not used
    }
    done = subprocess.run(
        [
            *cloudstate_command(),
            "token",
            "create",
            "rescue",
            "--scope",
            "admin",
            "--local",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert (made["name"], made["scopes"]) == ("rescue", ["admin"])
    rescued = api.client(made["token"])
    assert rescued.get("/v1/tokens").status_code == 200

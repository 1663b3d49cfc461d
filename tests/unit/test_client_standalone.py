"""The client stands alone (issue 19, defect 8): it imports nothing from ``cloudstate.api``,
``cloudstate.store`` or ``cloudstate.config``, needs none of the server's settings, and its own
models still describe exactly what the API sends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cloudstate.api import schemas
from cloudstate.client import base, models

BLOCKED = ("cloudstate.api", "cloudstate.store", "cloudstate.config")

IMPORT_BLOCKED = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith({BLOCKED!r}):
            raise ImportError(f"the client imported {{name}}")
        return None

sys.meta_path.insert(0, Block())
from cloudstate import Client, AsyncClient
from cloudstate.client import Event, Instance, ServerError
with Client("http://127.0.0.1:9", token="t") as api:
    pass
print(sorted(m for m in sys.modules if m.startswith("cloudstate.")))
"""


def test_the_client_imports_with_api_store_and_config_blocked() -> None:
    """In a fresh interpreter where importing ``cloudstate.api``, ``cloudstate.store`` or
    ``cloudstate.config`` raises, the client and its models import and a Client opens."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_BLOCKED], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "cloudstate.client" in done.stdout


def test_a_placeholder_secret_key_in_the_environment_does_not_stop_the_client(
    tmp_path: Path,
) -> None:
    """``Client()`` reads only CLOUDSTATE_URL/HOST/PORT/TOKEN/HOME: a placeholder
    ``CLOUDSTATE_SECRET_KEYS`` (which the server refuses) is none of its business."""
    (tmp_path / "token").write_text("cst_from_file\n")
    environ = {
        "CLOUDSTATE_SECRET_KEYS": "changeme",
        "CLOUDSTATE_HOME": str(tmp_path),
        "CLOUDSTATE_PORT": "9999",
    }
    endpoint = base.Endpoint.resolve(None, None, environ=environ)
    assert endpoint == base.Endpoint("http://127.0.0.1:9999", "cst_from_file")
    given = base.Endpoint.resolve("http://api.example/", "t", environ=environ)
    assert given == base.Endpoint("http://api.example", "t")
    env_token = base.Endpoint.resolve(None, None, environ={"CLOUDSTATE_TOKEN": "e", **environ})
    assert env_token.token == "e"


PAIRS = [
    (models.Instance, schemas.InstanceOut),
    (models.LaunchAttempt, schemas.LaunchAttemptOut),
    (models.InstancePage, schemas.InstancePage),
    (models.Order, schemas.OrderOut),
    (models.OrderPage, schemas.OrderPage),
    (models.ActionResult, schemas.ActionResultOut),
    (models.ActionOutcome, schemas.ActionResponse),
    (models.BulkResult, schemas.BulkActionResponse),
    (models.Account, schemas.AccountOut),
    (models.Subscription, schemas.SubscriptionOut),
    (models.RotatedSubscription, schemas.RotatedSubscriptionOut),
    (models.Delivery, schemas.DeliveryOut),
    (models.DeliveryPage, schemas.DeliveryPage),
    (models.Replay, schemas.ReplayOut),
    (models.Event, schemas.EventOut),
    (models.EventPage, schemas.EventPage),
    (models.Realm, schemas.RealmOut),
    (models.Worker, schemas.WorkerOut),
    (models.Token, schemas.TokenOut),
    (models.Health, schemas.Health),
    (models.Readiness, schemas.Readiness),
]


def shape(model: type[BaseModel]) -> dict[str, Any]:
    """Each field's JSON schema type and whether it is required (descriptions aside)."""
    schema = model.model_json_schema(mode="serialization")
    required = set(schema.get("required", []))
    found = {}
    for name, spec in schema["properties"].items():
        kept = {k: v for k, v in spec.items() if k not in ("description", "title", "default")}
        found[name] = (name in required, _without_titles(kept))
    return found


def _without_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_titles(v)
            for k, v in value.items()
            if k not in ("title", "description", "$ref")
        }
    if isinstance(value, list):
        return [_without_titles(v) for v in value]
    return value


@pytest.mark.parametrize(("client", "server"), PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_each_client_model_has_the_fields_of_the_apis_body(
    client: type[BaseModel], server: type[BaseModel]
) -> None:
    """The client's model and the API's response model have the same fields, of the same
    JSON types, required alike: the client cannot drift from what the server sends."""
    assert shape(client) == shape(server)

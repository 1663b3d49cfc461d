"""A client generated from the live OpenAPI document reads well and works (issue 19, defect 9).

openapi-python-client names each method after its operation id; the ids are the endpoints'
own names (``create_order``, ``get_instance``), not FastAPI's ``create_order_v1_orders_post``.
The generator pins versions of typer and httpx that the project does not use, so it runs from
a virtualenv of its own (made once, beside this one's, from PyPI); the generated code runs here.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from server import Served, shared_server

from cloudstate.testing import wait_until

pytestmark = pytest.mark.slow

GENERATOR = "openapi-python-client==0.29.1"
TOOLS = Path(sys.prefix) / "tools" / "openapi-python-client"
PACKAGE = "cloudstate_generated"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from shared_server(tmp_path_factory)


def generator() -> Path:
    """The generator's command, installed into its own virtualenv on first use."""
    command = TOOLS / "bin" / "openapi-python-client"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS)], check=True)
        pip = [str(TOOLS / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, GENERATOR], check=True, timeout=600)
    return command


@pytest.fixture(scope="module")
def generated(server: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The client generated from the server's /openapi.json, importable as ``PACKAGE``."""
    where = tmp_path_factory.mktemp("generated")
    document = where / "openapi.json"
    document.write_bytes(httpx.get(f"{server.url}/openapi.json", timeout=10).content)
    done = subprocess.run(
        [
            *(str(generator()), "generate", "--path", str(document), "--meta", "none"),
            *("--output-path", str(where / PACKAGE)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        yield where / PACKAGE
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_methods_are_named_after_what_they_do(generated: Path) -> None:
    """Every operation module has a plain name: ``orders/create_order.py``,
    ``instances/get_instance.py``, ... and none carries a path or a method in it."""
    names = {path.stem for path in (generated / "api").glob("*/*.py") if path.stem != "__init__"}
    assert {"create_order", "get_instance", "list_instances", "list_events"} <= names
    assert {"bulk_action", "create_account", "list_accounts", "stream_events"} <= names
    assert not [name for name in names if "_v1_" in name or name.endswith(("_get", "_post"))]


def test_the_generated_client_launches_and_reads_an_instance(
    server: Served, generated: Path
) -> None:
    """The generated client, against the live server: ``list_accounts`` finds the simulator
    account, ``create_order`` launches an instance, ``get_instance`` sees it running."""
    client_module = module("client")
    with client_module.AuthenticatedClient(base_url=server.url, token=server.token) as api:
        launch_and_read(api)


def launch_and_read(api: Any) -> None:
    accounts = module("api.accounts.list_accounts").sync(client=api)
    assert "simulator" in {account.name for account in accounts}
    mine = uuid.uuid4()
    body = module("models").OrderCreate.from_dict(
        {
            "account": "simulator",
            "image": "img-web",
            "hardware_profile": "small",
            "instances": [{"uuid": str(mine), "name": "generated-1"}],
        }
    )
    order = module("api.orders.create_order").sync(client=api, body=body)
    assert [str(instance.uuid) for instance in order.instances] == [str(mine)]
    get_instance = module("api.instances.get_instance")
    wait_until(
        lambda: str(get_instance.sync(mine, client=api).state) == "running",
        timeout=20,
        interval=0.1,
        what="the instance running",
    )

"""Logs never carry secrets: not at DEBUG, not for the requests that carry them."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from api_server import LiveApi

from cloudstate.logs import JsonFormatter
from cloudstate.testing import wait_until

CREDENTIAL = "very-secret-access-key-" + uuid.uuid4().hex


def test_credentials_tokens_and_webhook_secrets_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An account with credentials, a webhook with a secret, requests with bearer tokens and
    the engine driving that account, all logged at DEBUG: no secret appears in any record
    (message or structured fields), formatted as the JSON logs would be."""
    caplog.set_level(logging.DEBUG)
    with LiveApi(tmp_path) as api:
        admin = api.client(api.tokens.admin)
        account = {
            "name": "keyed",
            "provider": "simulator",
            "config": {"fast": True},
            "credentials": {"secret_access_key": CREDENTIAL},
        }
        assert admin.post("/v1/accounts", json=account).status_code == 201
        hook = admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
        assert hook.status_code == 201
        secret = hook.json()["secret"]
        order: dict[str, object] = {
            "account": "keyed",
            "image": "img-basic",
            "hardware_profile": "small",
            "instances": [{"uuid": str(uuid.uuid4())}],
        }
        assert admin.post("/v1/orders", json=order).status_code == 202
        wait_until(
            lambda: (
                admin.get(f"/v1/instances/{order['instances'][0]['uuid']}").json()["state"]
                == "running"
            ),
            timeout=20,
            what="the keyed account's instance to run",
        )
        tokens = [api.tokens.admin, api.tokens.write, api.tokens.read]
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert len(caplog.records) > 10  # the requests and the engine's work were logged
    for secret_value in [CREDENTIAL, secret, secret.removeprefix("whsec_"), *tokens]:
        assert secret_value not in logged

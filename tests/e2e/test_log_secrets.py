"""Logs never carry secrets: not at DEBUG, not for the requests that carry them, not in what
third-party libraries (botocore) log about their own requests.

The records are read where an operator reads them: from the handler ``cloudstate.logs
.configure`` installs (JSON lines on stderr), with ``CLOUDSTATE_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import io
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_server import LiveApi

from cloudstate.config import load_settings
from cloudstate.logs import configure
from cloudstate.testing import wait_until
from moto_server import REGION, shared_moto

CREDENTIAL = "very-secret-access-key-" + uuid.uuid4().hex
AWS_KEY_ID = "AKIA" + uuid.uuid4().hex[:16].upper()
AWS_SECRET = "aws-secret-" + uuid.uuid4().hex + "/" + uuid.uuid4().hex[:8]
AWS_SESSION = "FwoGZXIvYXdzE" + uuid.uuid4().hex * 4 + "=="


@pytest.fixture
def debug_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """cloudstate's own logging set-up at DEBUG in JSON, writing to a buffer in place of
    stderr; yields a reader of what it wrote. The root logger's handlers and level are put back
    afterwards (pytest's own included)."""
    root = logging.getLogger()
    kept_handlers, kept_level = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure(load_settings(home=tmp_path / "logs", log_level="DEBUG", log_format="json"))
    try:
        yield buffer.getvalue
    finally:
        root.handlers[:] = kept_handlers
        root.setLevel(kept_level)


def running(api: LiveApi, account: str, image: str, profile: str) -> None:
    """Launch one instance on ``account`` with a write token and wait until it runs."""
    writer = api.client(api.tokens.write)
    instance = str(uuid.uuid4())
    order = {
        "account": account,
        "image": image,
        "hardware_profile": profile,
        "instances": [{"uuid": instance}],
    }
    assert writer.post("/v1/orders", json=order).status_code == 202
    wait_until(
        lambda: writer.get(f"/v1/instances/{instance}").json()["state"] == "running",
        timeout=30,
        what=f"the {account} account's instance to run",
    )


def test_credentials_tokens_and_webhook_secrets_never_reach_the_logs(
    tmp_path: Path, debug_logs: Callable[[], str]
) -> None:
    """An EC2 account on moto's EC2 server with temporary credentials (key id, secret, session
    token), a simulator account with a secret, a webhook with a secret, requests with bearer
    tokens, and the engine driving both accounts, all logged at DEBUG: botocore logs its
    signed requests, and still no secret appears in any line, neither whole nor as the
    ``Credential=AKIA…`` scope or ``X-Amz-Security-Token`` header botocore writes."""
    moto = shared_moto()
    moto.reset()
    image = moto.register_image()
    with LiveApi(tmp_path / "home") as api:
        admin = api.client(api.tokens.admin)
        accounts = [
            {
                "name": "keyed",
                "provider": "simulator",
                "config": {"fast": True},
                "credentials": {"secret_access_key": CREDENTIAL},
            },
            {
                "name": "aws",
                "provider": "ec2",
                "config": {"region": REGION, "endpoint_url": moto.url},
                "credentials": {
                    "access_key_id": AWS_KEY_ID,
                    "secret_access_key": AWS_SECRET,
                    "session_token": AWS_SESSION,
                },
            },
        ]
        for account in accounts:
            created = admin.post("/v1/accounts", json=account)
            assert created.status_code == 201, created.text
        hook = admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
        assert hook.status_code == 201
        secret = hook.json()["secret"]
        running(api, "keyed", "img-basic", "small")
        running(api, "aws", image, "t3.micro")
        tokens = [api.tokens.admin, api.tokens.write, api.tokens.read]
    logged = debug_logs()
    lines = logged.splitlines()
    assert len(lines) > 10  # the requests and the engine's work were logged
    assert any('"logger": "botocore' in line for line in lines)  # botocore's DEBUG output
    assert "X-Amz-Security-Token" in logged or "x-amz-security-token" in logged.lower()
    secrets = [CREDENTIAL, secret, secret.removeprefix("whsec_"), *tokens]
    secrets += [AWS_KEY_ID, AWS_SECRET, AWS_SESSION, AWS_SESSION[:40]]
    leaked = [value[:12] for value in secrets if value in logged]
    assert not leaked, f"secrets in the logs (first characters shown): {leaked}"

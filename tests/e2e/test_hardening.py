"""What an outside audit found loose, each shut over the live API: weak webhook secrets, webhook
URLs shown whole to tokens below admin, and a database file others could read."""

from __future__ import annotations

import base64
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_server import LiveApi

from cloudstate.embedded import CloudState
from cloudstate.exceptions import ValidationError
from cloudstate.service import accounts
from cloudstate.webhooks.signing import generate_secret

HOOK = "https://93.184.216.34/hook"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("hardening")) as live:
        yield live


@pytest.mark.parametrize(
    "secret",
    ["whsec_AQ", "whsec_" + base64.b64encode(b"k" * 23).decode(), base64.b64encode(b"x").decode()],
)
def test_webhook_secrets_shorter_than_24_bytes_are_refused_on_create_and_rotation(
    api: LiveApi, secret: str
) -> None:
    """422 naming ``secret``, and nothing is stored; Standard Webhooks secrets are 24 to 64
    bytes, and a 1-byte HMAC key is guessable."""
    writer = api.client(api.tokens.write)
    before = len(writer.get("/v1/subscriptions").json())
    created = writer.post("/v1/subscriptions", json={"url": HOOK, "secret": secret})
    assert created.status_code == 422, created.text
    assert [e["field"] for e in created.json()["errors"]] == ["secret"]
    assert len(writer.get("/v1/subscriptions").json()) == before

    hook = writer.post("/v1/subscriptions", json={"url": HOOK}).json()
    rotated = writer.post(f"/v1/subscriptions/{hook['id']}/rotate-secret", json={"secret": secret})
    assert rotated.status_code == 422, rotated.text
    assert [e["field"] for e in rotated.json()["errors"]] == ["secret"]


def test_a_webhook_secret_of_24_bytes_is_accepted(api: LiveApi) -> None:
    writer = api.client(api.tokens.write)
    secret = "whsec_" + base64.b64encode(b"s" * 24).decode()
    created = writer.post("/v1/subscriptions", json={"url": HOOK, "secret": secret})
    assert created.status_code == 201, created.text
    unpadded = base64.b64encode(b"t" * 25).decode().rstrip("=")  # prefix and padding optional
    assert writer.post("/v1/subscriptions", json={"url": HOOK, "secret": unpadded}).is_success


def test_the_embedded_api_refuses_a_short_webhook_secret_too(tmp_path: Path) -> None:
    with CloudState(home=tmp_path / "home", simulator_fast=True) as cs:
        with pytest.raises(ValidationError) as caught:
            accounts.add_subscription(cs.store, "http", HOOK, secret="whsec_AQ")
        assert caught.value.errors[0].field == "secret"
        good = accounts.add_subscription(cs.store, "http", HOOK, secret=generate_secret(24))
        assert good.target == HOOK


def test_webhook_urls_with_credentials_are_redacted_below_admin(api: LiveApi) -> None:
    """A URL carrying a user, password, query token or fragment is shown whole to admin
    tokens only; read and write tokens see scheme, host, port and path, the rest redacted
    (list, get, and the writer's own create, update and rotate answers)."""
    token = "tok-" + uuid.uuid4().hex
    url = f"https://hookuser:pw-{token}@93.184.216.34:8443/in?token={token}#frag-{token}"
    admin, writer, reader = (
        api.client(t) for t in (api.tokens.admin, api.tokens.write, api.tokens.read)
    )
    created = writer.post("/v1/subscriptions", json={"url": url})
    assert created.status_code == 201, created.text
    path = f"/v1/subscriptions/{created.json()['id']}"
    redacted = "https://redacted@93.184.216.34:8443/in?redacted#redacted"
    below_admin = [
        created,
        reader.get(path),
        writer.get(path),
        writer.patch(path, json={"description": "x"}),
        writer.post(f"{path}/rotate-secret", json={"grace_seconds": 0}),
    ]
    for answer in below_admin:
        assert answer.status_code in (200, 201), answer.text
        assert answer.json()["url"] == redacted
        assert token not in answer.text
    listed = reader.get("/v1/subscriptions")
    assert token not in listed.text
    assert redacted in [s["url"] for s in listed.json()]
    assert admin.get(path).json()["url"] == url
    assert url in [s["url"] for s in admin.get("/v1/subscriptions").json()]
    plain = writer.post("/v1/subscriptions", json={"url": HOOK}).json()
    assert reader.get(f"/v1/subscriptions/{plain['id']}").json()["url"] == HOOK


def test_the_sqlite_database_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Created 0600 (it holds user data), like the key file; one created 0644 by an older
    version is tightened at the next start."""
    home = tmp_path / "home"
    with CloudState(home=home, simulator_fast=True) as cs:
        order = {"image": "img-basic", "hardware_profile": "small"}
        cs.launch(order, instances=[{"uuid": str(uuid.uuid4())}])
        files = sorted(home.glob("cloudstate.db*"))
        assert {f.name for f in files} >= {"cloudstate.db", "cloudstate.db-wal"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
    (home / "cloudstate.db").chmod(0o644)
    with CloudState(home=home, simulator_fast=True):
        assert stat.S_IMODE((home / "cloudstate.db").stat().st_mode) == 0o600

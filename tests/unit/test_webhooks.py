"""Webhook building blocks: Standard Webhooks signatures, the CloudEvents envelope, the fakes."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cloudstate.domain.events import EventRecord
from cloudstate.engine.callables import CallableRegistry
from cloudstate.exceptions import AlreadyExistsError, ValidationError
from cloudstate.webhooks import (
    RecordingSender,
    SendResult,
    cloud_event,
    encode,
    event_body,
    generate_secret,
    sign,
    verify,
    webhook_headers,
)
from cloudstate.webhooks.envelope import rfc3339
from cloudstate.webhooks.signing import secret_key

INSTANCE = uuid.UUID("6f1d3c8e-2b4a-4e59-9a57-0c3c1f6b2d10")
EVENT_ID = uuid.UUID("0b8e2f7a-9d3c-4c1e-8f6a-5e2d1c0b9a87")


@pytest.fixture
def reference() -> Any:
    """The reference Standard Webhooks library (a dev dependency)."""
    return pytest.importorskip("standardwebhooks")


def _event(**changes: object) -> EventRecord:
    fields: dict[str, object] = {
        "seq": 42,
        "id": EVENT_ID,
        "type": "instance.state_changed",
        "subject": str(INSTANCE),
        "time": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "data": {"state": "running", "previous": "pending"},
        "instance_uuid": INSTANCE,
        "instance_seq": 3,
        "account": "sim",
    }
    fields.update(changes)
    return EventRecord(**fields)  # type: ignore[arg-type]


class TestSecrets:
    def test_generated_secrets_are_whsec_base64_of_the_asked_size(self) -> None:
        """A secret is 'whsec_' + base64 of random bytes; two are never the same."""
        for size in (24, 32, 64):
            secret = generate_secret(size)
            assert secret.startswith("whsec_")
            assert len(base64.b64decode(secret.removeprefix("whsec_"))) == size
        assert generate_secret() != generate_secret()

    def test_sizes_outside_24_to_64_bytes_are_refused(self) -> None:
        """Too short is guessable; too long is not what receivers' libraries expect."""
        for size in (0, 23, 65):
            with pytest.raises(ValueError, match="24 to 64"):
                generate_secret(size)

    def test_a_malformed_secret_is_a_validation_error_on_the_secret_field(self) -> None:
        """Not base64, or nothing after the prefix: the caller is told which field is wrong."""
        for bad in ("whsec_not base64!", "whsec_", ""):
            with pytest.raises(ValidationError) as caught:
                secret_key(bad)
            assert caught.value.errors[0].field == "secret"

    def test_the_prefix_is_optional_and_padding_may_be_missing(self) -> None:
        """Secrets copied without 'whsec_' or without '=' padding still decode to the same key."""
        secret = "whsec_" + base64.b64encode(b"k" * 25).decode()
        assert secret_key(secret) == b"k" * 25
        assert secret_key(secret.removeprefix("whsec_").rstrip("=")) == b"k" * 25


class TestSignatures:
    def test_a_signature_matches_the_reference_library_byte_for_byte(self, reference: Any) -> None:
        """Our v1 signature equals reference.Webhook.sign for the same input."""
        secret = generate_secret()
        body = b'{"hello":"w\xc3\xb6rld"}'
        stamp = 1_714_566_615
        expected = reference.Webhook(secret).sign(
            "msg_1", datetime.fromtimestamp(stamp, tz=UTC), body.decode()
        )
        assert sign(secret, "msg_1", stamp, body) == expected
        assert sign(secret, "msg_1", stamp, body.decode()) == expected

    def test_the_reference_library_verifies_our_headers(self, reference: Any) -> None:
        """A receiver using standardwebhooks accepts our headers and returns the parsed body."""
        secret = generate_secret()
        body = event_body(_event())
        headers = webhook_headers(secret, str(EVENT_ID), int(time.time()), body)
        assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        parsed = reference.Webhook(secret).verify(body, headers)
        assert parsed["id"] == str(EVENT_ID)

    def test_verify_accepts_the_genuine_request_and_refuses_every_tampering(self) -> None:
        """Changed body, id or timestamp, another secret, or a stale timestamp: all refused."""
        secret = generate_secret()
        now = 1_714_566_615
        body = b'{"n":1}'
        headers = webhook_headers(secret, "msg_1", now, body)
        assert verify(secret, body, headers, now=now)
        assert verify(secret, body, {k.upper(): v for k, v in headers.items()}, now=now)
        assert not verify(secret, b'{"n":2}', headers, now=now)
        assert not verify(generate_secret(), body, headers, now=now)
        assert not verify(secret, body, {**headers, "webhook-id": "msg_2"}, now=now)
        assert not verify(secret, body, {**headers, "webhook-timestamp": str(now + 1)}, now=now)
        assert not verify(secret, body, headers, now=now + 301)
        assert not verify(secret, body, headers, now=now - 301)
        assert not verify(secret, body, {"webhook-id": "msg_1"}, now=now)

    def test_rotation_signs_with_every_active_secret(self, reference: Any) -> None:
        """Old and new secret each verify while both are active; the order is newest first."""
        old, new = generate_secret(), generate_secret()
        body = b"{}"
        stamp = int(time.time())
        header = sign([new, old], "msg_1", stamp, body)
        assert header.split() == [sign(new, "msg_1", stamp, body), sign(old, "msg_1", stamp, body)]
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp)}
        for secret in (old, new):
            assert verify(secret, body, {**headers, "webhook-signature": header})
            reference.Webhook(secret).verify(body, {**headers, "webhook-signature": header})

    def test_without_a_secret_the_request_carries_id_and_timestamp_only(self) -> None:
        """An unsigned subscription still gets the id receivers de-duplicate on."""
        assert webhook_headers([], "msg_1", 17, b"{}") == {
            "webhook-id": "msg_1",
            "webhook-timestamp": "17",
        }
        with pytest.raises(ValueError, match="at least one secret"):
            sign([], "msg_1", 17, b"{}")


class TestEnvelope:
    def test_an_instance_event_becomes_a_cloudevents_1_0_structured_event(self) -> None:
        """Every required attribute, the plain event type, and data with sequence and cursor."""
        envelope = cloud_event(_event(), source="https://cloudstate.example/cloudstate")
        assert envelope == {
            "specversion": "1.0",
            "id": str(EVENT_ID),
            "source": "https://cloudstate.example/cloudstate",
            "type": "instance.state_changed",
            "subject": str(INSTANCE),
            "time": "2024-05-01T12:30:15.123456Z",
            "datacontenttype": "application/json",
            "data": {"state": "running", "previous": "pending", "sequence": 3, "cursor": 42},
        }

    def test_the_body_is_compact_utf8_json_of_the_envelope(self) -> None:
        """The bytes sent (and signed) parse back to the envelope; non-ASCII stays readable."""
        event = _event(data={"name": "wörker"})
        body = event_body(event)
        assert body == encode(cloud_event(event))
        assert "wörker".encode() in body
        assert json.loads(body)["data"] == {"name": "wörker", "sequence": 3, "cursor": 42}
        assert json.loads(body)["source"] == "/cloudstate"

    def test_events_about_no_instance_carry_a_null_sequence(self) -> None:
        """Realm and account events have a subject but no per-instance number."""
        event = _event(
            type="realm.availability_changed",
            subject="sim-a",
            instance_uuid=None,
            instance_seq=None,
            data={"realm": "sim-a", "available": False},
        )
        envelope = cloud_event(event)
        assert (envelope["subject"], envelope["data"]["sequence"]) == ("sim-a", None)

    def test_times_are_rfc3339_utc_and_naive_times_are_refused(self) -> None:
        """Any zone is converted to UTC with a Z; a naive time is a bug, not a guess."""
        plus_two = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
        assert rfc3339(plus_two) == "2024-05-01T12:00:00Z"
        with pytest.raises(ValueError, match="naive"):
            rfc3339(datetime(2024, 5, 1, 12, 0))
        with pytest.raises(ValueError, match="source"):
            cloud_event(_event(), source="")


class TestRecordingSender:
    def test_it_records_requests_and_answers_as_told(self) -> None:
        """Tests can script answers per request and read back what was sent."""
        sender = RecordingSender(
            respond=lambda request: (
                SendResult(410, "HTTP 410") if request.url.endswith("/gone") else SendResult(204)
            )
        )

        async def send_two() -> list[SendResult]:
            return [
                await sender.send("http://x/ok", b'{"a":1}', {"webhook-id": "1"}),
                await sender.send("http://x/gone", b'{"a":2}', {"webhook-id": "2"}),
            ]

        ok, gone = asyncio.run(send_two())
        assert (ok.ok, ok.status_code) == (True, 204)
        assert (gone.ok, gone.status_code, gone.error) == (False, 410, "HTTP 410")
        assert [r.url for r in sender.requests] == ["http://x/ok", "http://x/gone"]
        assert sender.bodies() == [{"a": 1}, {"a": 2}]
        assert sender.requests[1].headers == {"webhook-id": "2"}

    def test_only_2xx_counts_as_delivered(self) -> None:
        """Redirects, client and server errors, and no answer at all are failures."""
        assert [SendResult(code).ok for code in (200, 204, 299)] == [True] * 3
        assert [SendResult(code).ok for code in (199, 301, 404, 500, None)] == [False] * 5


class TestCallableRegistry:
    def test_registered_names_resolve_and_unregistered_ones_do_not(self) -> None:
        """What a process can claim is exactly what it registered."""
        registry = CallableRegistry()
        seen: list[EventRecord] = []
        registry.register("audit", seen.append)
        assert "audit" in registry
        assert registry.names() == frozenset({"audit"})
        callback = registry.get("audit")
        assert callback is not None
        callback(_event())
        assert [event.seq for event in seen] == [42]
        registry.unregister("audit")
        assert registry.get("audit") is None
        assert registry.names() == frozenset()

    def test_a_taken_name_is_refused_unless_replacing(self) -> None:
        """Two functions under one name would be ambiguous; the same one again is harmless."""

        def first(_event: EventRecord) -> None: ...
        def second(_event: EventRecord) -> None: ...

        registry = CallableRegistry()
        registry.register("hook", first)
        registry.register("hook", first)
        with pytest.raises(AlreadyExistsError, match="hook"):
            registry.register("hook", second)
        registry.register("hook", second, replace=True)
        assert registry.get("hook") is second

    def test_names_must_be_printable_and_callbacks_callable(self) -> None:
        """Bad input is a validation error naming the field."""
        registry = CallableRegistry()
        for name in ("", "x" * 256, "tab\there"):
            with pytest.raises(ValidationError, match="name"):
                registry.register(name, print)
        with pytest.raises(ValidationError, match="callback"):
            registry.register("hook", "not callable")  # type: ignore[arg-type]

    def test_concurrent_registration_loses_nothing(self) -> None:
        """Eight threads registering 50 names each end with all 400 names registered."""
        registry = CallableRegistry()

        def register_many(worker: int) -> None:
            for n in range(50):
                registry.register(f"w{worker}-{n}", print)

        threads = [threading.Thread(target=register_many, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(registry.names()) == 400

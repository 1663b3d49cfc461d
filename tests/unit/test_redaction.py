"""The logging seam's redaction: the shapes secrets take in library logs, and the filter on a
handler covering records from any logger."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from cloudstate import redaction
from cloudstate.logs import JsonFormatter

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "FwoGZXIvYXdzEJr//////////wEaDOnmfiTL1c3dQqBSSyKBAQ"


@pytest.mark.parametrize(
    "line",
    [
        f"headers={{'X-Amz-Security-Token': b'{SESSION}', 'Authorization': b'AWS4-HMAC-SHA256 "
        f"Credential={KEY_ID}/20240101/us-east-1/ec2/aws4_request, SignedHeaders=host, "
        "Signature=abcdef0123456789'}",
        f"CanonicalRequest:\nPOST\n/\nhost:ec2\nx-amz-security-token:{SESSION}\n\nhost",
        f"GET /?Action=X&X-Amz-Security-Token={SESSION}&X-Amz-Credential={KEY_ID}%2F20240101",
        f'{{"aws_secret_access_key": "{SECRET}", "aws_session_token": "{SESSION}"}}',
        f"secret_access_key={SECRET} session_token={SESSION}",
        f"Authorization: Bearer cst_{SESSION}",
        f"signing with whsec_{SESSION}",
        f"found key {KEY_ID} in the environment",
    ],
)
def test_secrets_in_the_shapes_libraries_log_them_are_redacted(line: str) -> None:
    cleaned = redaction.redact(line)
    assert redaction.REDACTED in cleaned
    for secret in (KEY_ID, SECRET, SESSION):
        assert secret not in cleaned


def test_ordinary_text_is_left_alone() -> None:
    line = "GET /v1/instances 200 3.1ms; the token is unknown or revoked; 5 instances running"
    assert redaction.redact(line) == line


def test_remembered_credential_values_are_redacted_in_any_shape() -> None:
    value = "opaque-credential-value-0123456789"
    redaction.remember([value, "short"])
    assert redaction.redact(f"got <{value}> from the driver") == "got <[redacted]> from the driver"
    assert redaction.redact("a short word") == "a short word"  # under MIN_REMEMBERED: kept


@pytest.fixture
def handler() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """A JSON handler on the root logger with the redacting filter ``install`` put on it."""
    stream = io.StringIO()
    installed = logging.StreamHandler(stream)
    installed.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(installed)
    level = root.level
    root.setLevel(logging.DEBUG)
    assert redaction.install() >= 1
    try:
        yield installed, stream
    finally:
        root.removeHandler(installed)
        root.setLevel(level)


def test_the_filter_on_a_handler_covers_third_party_loggers_extras_and_tracebacks(
    handler: tuple[logging.Handler, io.StringIO],
) -> None:
    installed, stream = handler
    assert any(isinstance(f, redaction.RedactingFilter) for f in installed.filters)
    logging.getLogger("botocore.endpoint").debug(
        "Sending http request: %s", {"X-Amz-Security-Token": SESSION.encode()}
    )
    logging.getLogger("cloudstate.test").info("extra", extra={"detail": f"key {KEY_ID}"})
    try:
        raise RuntimeError(f"refused aws_secret_access_key={SECRET}")
    except RuntimeError:
        logging.getLogger("libcloud").exception("failed")
    written = stream.getvalue()
    assert written.count(redaction.REDACTED) >= 3
    for secret in (KEY_ID, SECRET, SESSION):
        assert secret not in written

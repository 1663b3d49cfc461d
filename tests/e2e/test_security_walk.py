"""Security, walked from the OpenAPI document: authentication, secrets at rest, size limits.

The walk takes every path and method from the live ``/openapi.json``, so a route added later is
walked too. An operation that declares no security requirement must be one of the documented
public ones (``/healthz``, ``/readyz``, the dashboard under ``/ui``); every other one refuses
a missing, malformed, unknown or revoked token with 401 and too small a scope with 403, as
problem+json, before it looks at its input. Which scope an operation needs is the rule of
docs/API.md: accounts (except reading them) and tokens need ``admin``, every other ``GET``
needs ``read``, everything else ``write``.

The server here allows no webhook target on loopback, so its SSRF refusals are the defaults.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import logging
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import FAST, LiveApi
from openapi_document import concrete, operations

from cloudstate.api.errors import MAX_BODY_BYTES, MAX_HEADER_BYTES
from cloudstate.service import queries
from cloudstate.testing import wait_until

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
SCOPES = ("read", "write", "admin")
MALFORMED = ("Bearer", "Basic dXNlcjpwdw==", "Token cst_abc", "cst_abc", "Bearer a b", "Bearer=x")
"""Authorization headers that carry no bearer token at all."""
SRC = Path(__file__).resolve().parents[2] / "src" / "cloudstate"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    settings = {key: value for key, value in FAST.items() if key != "webhook_allow"}
    with LiveApi(tmp_path_factory.mktemp("walk"), settings=settings) as live:
        yield live


@pytest.fixture(scope="module")
def document(api: LiveApi) -> dict[str, Any]:
    response = api.client().get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def needed_scope(method: str, template: str) -> str:
    """The scope docs/API.md gives an operation."""
    accounts = template.startswith("/v1/accounts")
    if template.startswith("/v1/tokens") or (accounts and method != "GET"):
        return "admin"
    return "read" if method == "GET" else "write"


def is_public(method: str, template: str) -> bool:
    return (method, template) in PUBLIC or template == "/ui" or template.startswith("/ui/")


def send(
    client: httpx.Client,
    method: str,
    path: str,
    authorization: str | None,
    *,
    body: bytes | None = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    """One request; a stream that answers 200 is closed after its headers."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = client.build_request(method, path, content=body, headers=headers, params=params)
    response = client.send(request, stream=True)
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        response.read()
    response.close()
    return response


def refusal(response: httpx.Response, status: int) -> str | None:
    """What is wrong with ``response`` as the ``status`` refusal, or None."""
    kind = response.headers.get("content-type", "")
    shown = kind if kind.startswith("text/event-stream") else response.text[:200]
    if response.status_code != status:
        return f"{response.status_code}, not {status}: {shown}"
    if not kind.startswith(PROBLEM):
        return f"content type {kind}"
    if response.json().get("status") != status:
        return f"body {shown}"
    if status == 401 and response.headers.get("www-authenticate") != "Bearer":
        return "no WWW-Authenticate: Bearer"
    return None


# --- the walk --------------------------------------------------------------------------------


def test_only_health_and_readiness_are_public_in_the_document(document: dict[str, Any]) -> None:
    """Each operation that declares no security requirement is a documented public one, and
    each protected one declares the bearer scheme and its 401 and 403 answers."""
    public = {(m, t) for m, t, op in operations(document) if not op.get("security")}
    assert {key for key in public if not is_public(*key)} == set()
    assert public >= PUBLIC
    for method, template, operation in operations(document):
        if is_public(method, template):
            continue
        assert operation["security"] == [{"HTTPBearer": []}], (method, template)
        assert {"401", "403"} <= operation["responses"].keys(), (method, template)


def test_every_operation_refuses_every_caller_without_a_live_token_of_its_scope(
    api: LiveApi, document: dict[str, Any]
) -> None:
    """Every operation of the document: no token, a malformed header, an unknown token and a
    revoked one get 401 problem+json with ``WWW-Authenticate: Bearer``; each scope below the
    one it needs gets 403; its own scope and above get past both. Public operations answer
    without a token, and a bad one does not matter to them."""
    client = api.client()
    problems: list[str] = []
    for method, template, operation in operations(document):
        path = concrete(template, operation)
        if is_public(method, template):
            for authorization in (None, "Bearer cst_junk"):
                response = send(client, method, path, authorization)
                if response.status_code != 200:
                    problems.append(f"{method} {template}: public, but {response.status_code}")
            continue
        body = b"{}" if "requestBody" in operation else None
        needed = SCOPES.index(needed_scope(method, template))
        problems += [
            f"{method} {template} as {caller}: {found}"
            for caller, authorization, status in _callers(api, needed)
            if (found := _refused(send(client, method, path, authorization, body=body), status))
        ]
    assert problems == []


def _callers(api: LiveApi, needed: int) -> Iterator[tuple[str, str | None, int | None]]:
    """Each caller of a protected operation needing ``SCOPES[needed]``: who, the
    Authorization header, and the refusal due (None: let past)."""
    for authorization in [None, *MALFORMED, "Bearer cst_" + uuid.uuid4().hex]:
        yield repr(authorization), authorization, 401
    yield "revoked", f"Bearer {api.tokens.revoked}", 401
    yield "admin + 1 character", f"Bearer {api.tokens.admin}x", 401
    for rank, scope in enumerate(SCOPES):
        yield scope, f"Bearer {getattr(api.tokens, scope)}", 403 if rank < needed else None


def _refused(response: httpx.Response, status: int | None) -> str | None:
    """What is wrong with ``response`` for a caller due ``status`` (None: not 401 or 403)."""
    if status is not None:
        return refusal(response, status)
    return f"{response.status_code}" if response.status_code in (401, 403) else None


def test_authentication_comes_before_any_look_at_the_input(
    api: LiveApi, document: dict[str, Any]
) -> None:
    """Malformed JSON, bytes that are not UTF-8, nesting deeper than the parser goes, and
    out-of-range query parameters: without a token every protected operation answers 401 and
    with too small a scope 403, never the 422 that would describe what it accepts."""
    client = api.client()
    bad_bodies = [b'{"instances": [', b"\xff\xfe{}", b"[" * 100_000]
    bad_query = {"limit": -1, "after": -1}
    problems: list[str] = []
    for method, template, operation in operations(document):
        if is_public(method, template):
            continue
        path = concrete(template, operation)
        needed = SCOPES.index(needed_scope(method, template))
        below = f"Bearer {getattr(api.tokens, SCOPES[needed - 1])}" if needed else None
        queries_taken = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        params = {k: v for k, v in bad_query.items() if k in queries_taken} or None
        bodies = bad_bodies if "requestBody" in operation else [None]
        for body in bodies:
            for authorization, status in ((None, 401), (below, 403)):
                if status == 403 and below is None:
                    continue
                response = send(client, method, path, authorization, body=body, params=params)
                found = refusal(response, status)
                if found:
                    shown = body[:16] if body else params
                    problems.append(f"{method} {template} {shown!r} as {authorization}: {found}")
    assert problems == []


def test_malformed_json_without_a_token_is_a_401_and_with_one_a_422(api: LiveApi) -> None:
    """FastAPI parses a JSON body before any dependency runs, so a body that was not JSON got
    its 422 before authentication did. Anonymous callers now get 401; the 422 naming ``body``
    is for callers who may use the route."""
    client = api.client()
    broken = b'{"instances": ['
    assert refusal(send(client, "POST", "/v1/orders", None, body=broken), 401) is None
    writer = f"Bearer {api.tokens.write}"
    response = send(client, "POST", "/v1/orders", writer, body=broken)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body", "message": "JSON decode error"}]


def test_the_documentation_is_public_and_the_dashboard_needs_no_token_to_load(
    api: LiveApi,
) -> None:
    """``/openapi.json`` and ``/docs`` answer without a token; so does the dashboard's page
    under ``/ui`` (its API calls carry one), when this build serves it."""
    client = api.client()
    assert client.get("/openapi.json").status_code == 200
    docs = client.get("/docs")
    assert (docs.status_code, docs.headers["content-type"].split(";")[0]) == (200, "text/html")
    page = client.get("/ui/")
    if page.status_code == 404:
        pytest.skip("this build serves no dashboard")
    assert (page.status_code, page.headers["content-type"].split(";")[0]) == (200, "text/html")


# --- secrets at rest and in answers ----------------------------------------------------------


def database_bytes(home: Path) -> bytes:
    """Every byte of the store's files (main file, WAL, shared memory)."""
    return b"".join(path.read_bytes() for path in sorted(home.glob("cloudstate.db*")))


def every_page_of_events(client: httpx.Client) -> str:
    texts, after = [], 0
    while True:
        page = client.get("/v1/events", params={"after": after, "limit": 1000})
        assert page.status_code == 200, page.text
        texts.append(page.text)
        if not page.json()["items"]:
            return "".join(texts)
        after = page.json()["next_after"]


def test_tokens_webhook_secrets_and_private_keys_are_never_shown_again_or_stored_plain(
    api: LiveApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A token created over the API, a webhook secret given, one generated by rotation, and
    an instance's generated private key: after the one answer that hands each out, none
    appears in any response, event or log record, nor in any byte of the database files,
    where each token is found only as its SHA-256 digest."""
    caplog.set_level(logging.DEBUG)
    admin = api.client(api.tokens.admin)
    created = admin.post("/v1/tokens", json={"name": "walker", "scopes": ["read"]})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    given = "whsec_" + "c2VjcmV0LXRoYXQtaXMtbG9uZy1lbm91Z2gtZm9yLWhtYWM="
    nobody = {"instances": [str(uuid.uuid4())]}
    hook = admin.post(
        "/v1/subscriptions",
        json={"url": "https://93.184.216.34/h", "secret": given, "filters": nobody},
    )
    assert hook.status_code == 201, hook.text
    path = f"/v1/subscriptions/{hook.json()['id']}"
    rotated = admin.post(f"{path}/rotate-secret", json={"grace_seconds": 0}).json()["secret"]
    instance = str(uuid.uuid4())
    order = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
    assert admin.post("/v1/orders", json={**order, "instances": [{"uuid": instance}]}).is_success
    key = wait_until(
        lambda: queries.instance_key(api.cs.store, uuid.UUID(instance)), timeout=30, interval=0.1
    )
    key_lines = [line for line in key.splitlines() if len(line) >= 40 and "-----" not in line]
    assert key_lines

    answers = [
        admin.get(url).text
        for url in ("/v1/tokens", "/v1/subscriptions", path, f"{path}/deliveries", "/metrics")
    ]
    answers += [
        admin.get(f"/v1/instances/{instance}").text,
        admin.get("/v1/instances").text,
        admin.patch(path, json={"description": "walked"}).text,
        every_page_of_events(admin),
    ]
    texts = "".join(answers) + "".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    stored = database_bytes(api.home)
    secrets = {
        "token": token,
        "given secret": given.removeprefix("whsec_"),
        "rotated secret": rotated.removeprefix("whsec_"),
        **{f"key line {n}": line for n, line in enumerate(key_lines)},
    }
    assert [name for name, value in secrets.items() if value in texts] == []
    assert [name for name, value in secrets.items() if value.encode() in stored] == []
    for plaintext in (token, api.tokens.admin, api.tokens.revoked):
        assert hashlib.sha256(plaintext.encode()).hexdigest().encode() in stored


def test_no_secret_is_compared_with_a_plain_equals_in_the_source() -> None:
    """Timing-safe comparison: no ``==`` or ``!=`` in ``src/`` has an operand named like a
    token, secret, signature, digest, password or credential (those go through
    ``hmac.compare_digest``). A column of a mapped table (``ApiToken.digest == wanted``) is a
    SQL clause the database evaluates on an index, not a comparison in Python."""
    secretish = re.compile(r"token|secret|signature|digest|password|credential|hmac", re.I)
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(operand, ast.Constant) for operand in operands):
                continue  # a scheme or a marker compared with a literal is no secret
            named = [name for operand in operands for name in _names(operand)]
            if any(secretish.search(name) for name in named):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def _names(operand: ast.expr) -> Iterator[str]:
    """Identifiers a comparison operand reads, leaving out mapped columns (``Table.column``)
    and class names."""
    if isinstance(operand, ast.Attribute) and _is_class(operand.value):
        return
    for node in ast.walk(operand):
        if isinstance(node, ast.Name) and not _is_class(node):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr


def _is_class(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id[:1].isupper()


# --- webhook targets (SSRF) ------------------------------------------------------------------


INTERNAL_URLS = [
    "http://127.0.0.1/h",
    "http://2130706433/h",  # 127.0.0.1 as one number
    "http://0x7f.1/h",
    "http://[::1]/h",
    "http://localhost/h",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://10.0.0.1/h",
    "http://192.168.1.1/h",
    "http://0.0.0.0/h",
    "file:///etc/passwd",
]


def test_webhook_targets_inside_the_network_are_refused_on_create_and_on_update(
    api: LiveApi,
) -> None:
    """The SSRF rules, re-checked through this server (no allow-list): loopback however
    spelled, metadata addresses, private and unspecified ones, non-http schemes: 422 on
    ``url``, when a subscription is created and when its URL is changed."""
    writer = api.client(api.tokens.write)
    nobody = {"instances": [str(uuid.uuid4())]}
    created = writer.post(
        "/v1/subscriptions", json={"url": "https://93.184.216.34/h", "filters": nobody}
    )
    assert created.status_code == 201, created.text
    path = f"/v1/subscriptions/{created.json()['id']}"
    accepted = []
    for url in INTERNAL_URLS:
        for response in (
            writer.post("/v1/subscriptions", json={"url": url, "filters": nobody}),
            writer.patch(path, json={"url": url}),
        ):
            fields = {e["field"] for e in response.json().get("errors") or []}
            if (response.status_code, fields) != (422, {"url"}):
                accepted.append((url, response.request.method, response.status_code))
    assert accepted == []
    assert writer.get(path).json()["url"] == "https://93.184.216.34/h"


# --- size limits -----------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_before_authentication(api: LiveApi) -> None:
    """Over 1 MiB is refused with 413 problem+json even without a token: nothing reads it."""
    body = b" " * (MAX_BODY_BYTES + 1)
    for authorization in (None, f"Bearer {api.tokens.write}"):
        response = send(api.client(), "POST", "/v1/orders", authorization, body=body)
        assert refusal(response, 413) is None


def test_headers_over_the_limit_are_a_431_and_enormous_ones_a_4xx_not_a_hang(
    api: LiveApi,
) -> None:
    """Headers totalling over 32 KiB: 431 problem+json (however they arrived: uvicorn's own
    bound only holds for a head that arrives in pieces); one of several MiB, which uvicorn
    refuses before the application sees it: a 4xx within seconds; a long token just under
    the limit is simply unknown (401). The server goes on serving."""
    client = api.client()
    over = client.get("/v1/instances", headers={"X-Padding": "a" * (MAX_HEADER_BYTES + 1)})
    assert refusal(over, 431) is None
    many = {f"X-Padding-{n}": "a" * 1000 for n in range(40)}
    assert refusal(client.get("/v1/instances", headers=many), 431) is None
    long_token = "Bearer cst_" + "a" * (MAX_HEADER_BYTES - 2000)
    assert refusal(client.get("/v1/instances", headers={"Authorization": long_token}), 401) is None
    assert 400 <= _raw_status(api.url, b"X-Padding: " + b"a" * (4 * 1024 * 1024)) < 500
    assert client.get("/healthz").status_code == 200


def _raw_status(url: str, header: bytes) -> int:
    """The status line's code for a GET carrying ``header``, over a plain socket (so nothing
    in a client library stands between the bytes and the server)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = b"GET /v1/instances HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
        # the server may answer and close before it has read everything
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        answer = sock.recv(1024)
    return int(answer.split(b" ", 2)[1])

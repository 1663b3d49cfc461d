"""The API under callers who hold it open: ``wait: true`` actions hold no request thread, and
``/healthz`` never queues behind them; event streams share one reader per process, are capped
per token and per server (429 with ``Retry-After``), and end when their token is revoked."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import httpx
import pytest
from api_server import FAST, LiveApi
from sqlalchemy import event

from cloudstate.api.streams import REVALIDATE_SECONDS
from cloudstate.testing import simulated_cloud, wait_until

WAITS = 60
"""More concurrent waits than the API has request threads (AnyIO's default limiter: 40)."""


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("limits")) as live:
        yield live


def running(api: LiveApi, count: int) -> list[str]:
    writer = api.client(api.tokens.write)
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    order = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
    answer = writer.post("/v1/orders", json={**order, "instances": [{"uuid": u} for u in uuids]})
    assert answer.status_code == 202, answer.text

    def all_running() -> bool:
        page = writer.get("/v1/instances", params={"limit": 1000}).json()["items"]
        states = {i["uuid"]: (i["state"], i["operation"]) for i in page}
        return all(states.get(u) == ("running", None) for u in uuids)

    wait_until(all_running, timeout=60, interval=0.2, what=f"{count} instances running")
    return uuids


def test_waiting_actions_hold_no_request_thread_and_health_never_queues_behind_them(
    api: LiveApi,
) -> None:
    """60 ``destroy`` actions with ``wait: true`` against a cloud that has gone away (so none
    can finish: each waits its whole timeout) are more than the API's request threads; while
    they wait, ``/healthz`` and an ordinary read each answer within a second, and every wait
    ends as it should, in 504 at its timeout."""
    uuids = running(api, WAITS)
    with simulated_cloud(api.cs.settings.simulator_path) as cloud:
        cloud.configure(unreachable=True)
        timeout = 6.0
        limits = httpx.Limits(max_connections=WAITS + 5)
        with (
            httpx.Client(
                base_url=api.url,
                headers={"Authorization": f"Bearer {api.tokens.write}"},
                timeout=timeout + 30,
                limits=limits,
            ) as waiter,
            ThreadPoolExecutor(WAITS) as pool,
        ):
            body = {"action": "destroy", "wait": True, "timeout": timeout}
            started = time.monotonic()
            futures = [
                pool.submit(waiter.post, f"/v1/instances/{u}/actions", json=body) for u in uuids
            ]
            time.sleep(2.0)  # every wait is in, holding whatever it holds
            assert not any(f.done() for f in futures)
            reader = api.client(api.tokens.read)
            probes = []
            for _ in range(3):
                began = time.monotonic()
                assert api.client().get("/healthz").status_code == 200
                health = time.monotonic() - began
                began = time.monotonic()
                assert reader.get(f"/v1/instances/{uuids[0]}").status_code == 200
                probes.append((health, time.monotonic() - began))
            answers = [f.result() for f in futures]
            took = time.monotonic() - started
        cloud.configure(unreachable=False)
    assert max(h for h, _ in probes) < 1.0, probes
    assert max(r for _, r in probes) < 1.0, probes
    assert {a.status_code for a in answers} == {504}, {a.status_code for a in answers}
    assert took < timeout + 10  # the waits ran side by side, not a thread's worth at a time


# --- event streams ------------------------------------------------------------------------------


class Stream:
    """One open ``/v1/events/stream``, read in a thread over a plain socket (HTTP/1.0, so the
    body is the bytes as sent): its status, headers and frames. ``close()`` hangs up at once,
    as a browser tab closing would."""

    def __init__(self, api: LiveApi, token: str, **params: str) -> None:
        self.frames: list[dict[str, str]] = []
        self.ended = threading.Event()
        self.opened = threading.Event()
        self.status = 0
        self.headers: dict[str, str] = {}
        host, port = api.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        query = urlencode(params)
        request = (
            f"GET /v1/events/stream{'?' + query if query else ''} HTTP/1.0\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not answer"

    def _read(self) -> None:
        lines = self.sock.makefile("rb")
        try:
            self.status = int(lines.readline().split()[1])
            while (header := lines.readline().decode().strip()) != "":
                name, _, value = header.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self.opened.set()
            frame: dict[str, str] = {}
            for raw in lines:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if "id" in frame:
                        self.frames.append(frame)
                    frame = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    frame[key] = value
        except (OSError, ValueError, IndexError):
            pass
        finally:
            lines.close()
            self.opened.set()
            self.ended.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    settings = {**FAST, "stream_max_per_token": 3, "stream_max_total": 5}
    with LiveApi(tmp_path_factory.mktemp("capped"), settings=settings) as live:
        yield live


def test_streams_beyond_the_per_token_and_the_server_cap_get_429_with_retry_after(
    capped: LiveApi,
) -> None:
    """3 per token, 5 in all (as configured): the 4th of one token and the 6th in all are
    refused with a 429 problem and ``Retry-After``; a closed stream gives its place back."""
    tokens = capped.tokens
    mine = [Stream(capped, tokens.read) for _ in range(3)]
    assert {s.status for s in mine} == {200}
    refused = Stream(capped, tokens.read)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "5"
    assert refused.headers["content-type"] == "application/problem+json"
    others = [Stream(capped, tokens.write) for _ in range(2)]
    assert {s.status for s in others} == {200}
    full = Stream(capped, tokens.admin)
    assert (full.status, full.headers.get("retry-after")) == (429, "5")
    mine[0].close()
    time.sleep(1.5)  # the server notices the hang-up within a second
    freed = Stream(capped, tokens.admin)
    assert freed.status == 200
    for stream in [*mine, refused, *others, full, freed]:
        stream.close()


def test_one_reader_serves_every_stream_and_each_gets_what_its_filters_ask(
    api: LiveApi,
) -> None:
    """40 open streams, idle, cost the database what one reader does (a few reads a second,
    not one per stream per poll); a launch then reaches every unfiltered stream in full and
    each filtered one as its filter says (type, instance, label)."""
    engine = api.cs.store.database.engine
    reads: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "events.seq >" in statement:  # a read of the log after a cursor (not a claim's)
            reads.append(statement)

    streams = [Stream(api, api.tokens.read) for _ in range(40)]
    instance = str(uuid.uuid4())
    by_type = Stream(api, api.tokens.read, type="instance.created")
    by_instance = Stream(api, api.tokens.read, instance=instance)
    by_label = Stream(api, api.tokens.read, label="team=blue")
    event.listen(engine, "before_cursor_execute", count)
    try:
        time.sleep(2.0)
        idle_reads = len(reads)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert idle_reads <= 2.0 / 0.2 + 5, idle_reads  # one reader's polls, not 43 streams' worth

    writer = api.client(api.tokens.write)
    order = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
    launched = writer.post(
        "/v1/orders",
        json={**order, "instances": [{"uuid": instance, "labels": {"team": "blue"}}]},
    )
    assert launched.status_code == 202, launched.text

    def running_seen() -> bool:
        return all(
            any(f["event"] == "instance.state_changed" for f in s.frames)
            for s in [*streams, by_instance, by_label]
        )

    wait_until(running_seen, timeout=20, what="every stream seeing the launch")
    seqs = [[f["id"] for f in s.frames] for s in streams]
    common = min(len(s) for s in seqs)  # events still arrive while the streams are read
    assert all(s[:common] == seqs[0][:common] for s in seqs)  # the same events, same order
    assert [int(i) for i in seqs[0]] == sorted(int(i) for i in seqs[0])
    assert {f["event"] for f in by_type.frames} == {"instance.created"}
    assert by_instance.frames
    assert all(instance in f["data"] for f in by_instance.frames)
    assert [f["id"] for f in by_label.frames] == [f["id"] for f in by_instance.frames]
    for stream in [*streams, by_type, by_instance, by_label]:
        stream.close()


def test_a_stream_ends_within_five_seconds_of_its_tokens_revocation(api: LiveApi) -> None:
    """Revoked while open: the stream is closed by the server within the stated bound
    (``REVALIDATE_SECONDS``, 5 s, plus one poll), so later events do not reach it."""
    admin = api.client(api.tokens.admin)
    made = admin.post("/v1/tokens", json={"name": "ssetest", "scopes": ["read"]}).json()
    stream = Stream(api, made["token"])
    assert stream.status == 200
    time.sleep(0.5)
    assert admin.delete("/v1/tokens/ssetest").status_code == 200
    revoked_at = time.monotonic()
    running(api, 1)  # events after the revocation
    assert stream.ended.wait(REVALIDATE_SECONDS + 2), "the stream outlived its token"
    assert time.monotonic() - revoked_at <= REVALIDATE_SECONDS + 2
    stream.close()
    again = Stream(api, made["token"])
    assert again.status == 401
    again.close()

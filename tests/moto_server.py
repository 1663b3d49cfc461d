"""A real EC2 API on loopback for tests: moto's server, and a fault-injecting proxy before it.

One moto server per test process (``shared_moto()``), started on first use on a free loopback
port; each test that needs a clean cloud calls ``reset()`` (moto's own ``/moto-api/reset``),
which is cheap because moto's catalogue of public AMIs is not loaded: tests register their own
image (``register_image``), owned by the account, as a user's own AMI would be.

moto is told to validate AMI ids (as EC2 does), so launching an unknown image fails.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config

REGION = "us-east-1"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
"""Dummy credentials: moto accepts any."""

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    "<Code>{code}</Code><Message>{message}</Message>"
    "</Error></Errors><RequestID>fault-proxy</RequestID></Response>"
)


class MotoEC2:
    """moto's server in a thread of this process."""

    def __init__(self) -> None:
        os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"  # read per reset: keeps resets cheap
        import moto.settings  # imported late: after the environment is set
        from moto.server import ThreadedMotoServer

        moto.settings.ENABLE_AMI_VALIDATION = True  # as EC2: an unknown AMI is refused
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.ec2 = self.client()
        """A client kept for the run (boto3 clients are thread-safe)."""

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def client(self) -> Any:
        """A boto3 EC2 client straight to moto: the test's view "from outside" cloudstate."""
        return boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["access_key_id"],
            aws_secret_access_key=CREDENTIALS["secret_access_key"],
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )

    def register_image(self, name: str = "cloudstate-test") -> str:
        """A new AMI owned by the account; returns its id."""
        return str(self.ec2.register_image(Name=name, RootDeviceName="/dev/sda1")["ImageId"])

    def stop(self) -> None:
        self._server.stop()


_shared: MotoEC2 | None = None
_shared_lock = threading.Lock()


def shared_moto() -> MotoEC2:
    """The process's moto server, started on first use (a daemon thread; ends with the run)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MotoEC2()
        return _shared


class FaultProxy:
    """A reverse proxy on loopback in front of moto that can answer as a failing EC2 would:
    an EC2 error document (``RequestLimitExceeded`` by default) for every request or only some
    actions, possibly after letting a few through and possibly only a few times, or go away
    (connection refused). It notes when each request arrived, per action (``calls``)."""

    def __init__(self, upstream: str) -> None:
        self._upstream = urlsplit(upstream)
        self._fault: _Fault | None = None
        self._lock = threading.Lock()
        self.failed: list[str] = []  # the actions answered with the fault, in order
        self.calls: dict[str, list[float]] = {}  # action -> arrival times (time.monotonic())
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else keep-alive answers wait ~40 ms for an ACK

            def do_POST(self) -> None:
                proxy._handle(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._running = True

    def fail(
        self,
        code: str,
        *,
        status: int = 400,
        actions: Iterable[str] = (),
        after: int = 0,
        times: int | None = None,
        message: str = "injected by the test's fault proxy",
    ) -> None:
        """Answer these EC2 actions (every action when none) with the error ``code``, once
        ``after`` matching requests have passed; only ``times`` times when given, then pass
        every request through again."""
        with self._lock:
            self._fault = _Fault(code, status, frozenset(actions), after, message, times)

    def throttle(
        self, actions: Iterable[str] = (), after: int = 0, times: int | None = None
    ) -> None:
        self.fail("RequestLimitExceeded", actions=actions, after=after, times=times)

    def pass_through(self) -> None:
        with self._lock:
            self._fault = None

    def stop(self) -> None:
        """Close the listening socket: every later call is refused (an unreachable endpoint)."""
        if self._running:
            self._running = False
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
        with self._lock:
            self.calls.setdefault(action, []).append(time.monotonic())
        fault = self._take_fault(action)
        if fault is not None:
            document = ERROR_BODY.format(code=fault.code, message=fault.message).encode()
            self._answer(handler, fault.status, {"Content-Type": "text/xml"}, document)
            return
        upstream = http.client.HTTPConnection(
            self._upstream.hostname or "127.0.0.1", self._upstream.port, timeout=30
        )
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            upstream.request(handler.command, handler.path, body, headers)
            answer = upstream.getresponse()
            content = answer.read()
            kept = {
                k: v
                for k, v in answer.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "content-length")
            }
            self._answer(handler, answer.status, kept, content)
        finally:
            upstream.close()

    def _take_fault(self, action: str) -> _Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or (fault.actions and action not in fault.actions):
                return None
            if fault.after > 0:
                fault.after -= 1
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = None
            self.failed.append(action)
            return fault

    @staticmethod
    def _answer(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@dataclass
class _Fault:
    code: str
    status: int
    actions: frozenset[str]
    after: int
    message: str
    times: int | None = None  # faults left to answer; None: no end

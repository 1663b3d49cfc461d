"""A real ``cloudstate serve`` for the client and CLI tests, and a loopback proxy to cut.

``serve(home)`` runs the real command as a subprocess on a free port (embedded SQLite, the
simulator in fast mode, reconciling every 0.2 s while anything changes), waits for ``/readyz``
and reads the admin token from ``<home>/token``, exactly as a user would; ``shared_server``
shares one between test modules. ``CuttableProxy`` forwards TCP to it and can sever every open
connection at once: a real network disconnect, for the event stream's resume test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

COMMAND = Path(sys.executable).with_name("cloudstate")
START_SECONDS = 30.0


def cloudstate_command() -> list[str]:
    """The installed ``cloudstate`` script, or ``python -m cloudstate`` where there is none."""
    return [str(COMMAND)] if COMMAND.exists() else [sys.executable, "-m", "cloudstate"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without any CLOUDSTATE_* setting (the caller adds its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTATE_")}


@dataclass
class Served:
    url: str
    token: str
    home: Path
    port: int
    process: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        """An environment that points the CLI at this server with the admin token."""
        return {
            **clean_env(),
            "CLOUDSTATE_URL": self.url,
            "CLOUDSTATE_TOKEN": self.token,
            "COLUMNS": "160",
            **extra,
        }


@contextlib.contextmanager
def serve(home: Path) -> Iterator[Served]:
    port = free_port()
    env = {
        **clean_env(),
        "CLOUDSTATE_HOME": str(home),
        "CLOUDSTATE_HOST": "127.0.0.1",
        "CLOUDSTATE_PORT": str(port),
        "CLOUDSTATE_SIMULATOR_FAST": "true",
        "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.2",  # changes seen in 0.2 s, not 1 s
        "CLOUDSTATE_LOG_FORMAT": "text",
    }
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [*cloudstate_command(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, home)
        token = (home / "token").read_text().strip()
        yield Served(url, token, home, port, process)
    finally:
        _stop(process)
        log.close()


def _wait_ready(process: subprocess.Popen[bytes], url: str, home: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cloudstate serve exited: {(home / 'serve.log').read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"cloudstate serve not ready in {START_SECONDS}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_RUNNING: list[Served] = []


def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The body of a session fixture: one ``cloudstate serve`` however many modules use it.

    Each test module's session fixture is a fixture of its own to pytest; the first to run
    starts the server, the others share it, and it stops at the end of the session.
    """
    if _RUNNING:
        yield _RUNNING[0]
        return
    with serve(tmp_path_factory.mktemp("home")) as served:
        _RUNNING.append(served)
        try:
            yield served
        finally:
            _RUNNING.clear()


@dataclass
class CuttableProxy:
    """TCP from ``127.0.0.1:<port>`` to ``upstream``; ``cut()`` drops every open connection.

    ``requests`` keeps the first bytes each client connection sent (its request head), so a
    test can see what a reconnection asked for.
    """

    upstream: int
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    _listener: socket.socket = field(init=False)
    _open: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> CuttableProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self.cut()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        first = record
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if first:
                    self.requests.append(chunk)
                    first = False
                target.sendall(chunk)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def burst_worker(
    home: Path, settings: dict[str, str], failpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``cloudstate worker --burst`` on ``home`` with ``settings``, optionally armed to SIGKILL
    itself at ``failpoint``; returns when it is idle, timed out or dead."""
    env = {**os.environ, **settings, "CLOUDSTATE_HOME": str(home)}
    env.pop("CLOUDSTATE_FAILPOINTS", None)
    if failpoint:
        env["CLOUDSTATE_FAILPOINTS"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "cloudstate", "worker", "--burst", "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

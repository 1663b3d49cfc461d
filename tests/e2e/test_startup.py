"""Start-up while PostgreSQL is unreachable: ``cloudstate worker`` and ``cloudstate api`` retry
with backoff, one clear line per attempt (host, port, the error), until
``CLOUDSTATE_START_TIMEOUT_SECONDS``; then exit 1 with that line, never a traceback. A
database that comes up within the timeout is simply used."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from server import clean_env, cloudstate_command, free_port
from sqlalchemy.engine import make_url

from databases import truncate


def run(home: Path, url: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        **clean_env(),
        "CLOUDSTATE_HOME": str(home),
        "CLOUDSTATE_DATABASE_URL": url,
        "CLOUDSTATE_START_TIMEOUT_SECONDS": str(timeout),
        "CLOUDSTATE_LOG_FORMAT": "text",
    }
    return subprocess.run(
        [*cloudstate_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )


@pytest.mark.parametrize("command", [["worker"], ["api", "--port", "0"]])
def test_a_process_started_without_its_database_retries_then_exits_1_with_one_clear_line(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://cloudstate:hunter2-password@127.0.0.1:{port}/cloudstate"
    started = time.monotonic()
    done = run(tmp_path, url, *command, timeout=3)
    took = time.monotonic() - started

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr  # the URL's password is never shown
    attempts = [line for line in done.stderr.splitlines() if "unreachable (attempt" in line]
    assert len(attempts) >= 3, done.stderr  # 0.5 s, 1 s, 2 s apart: backoff within 3 s
    assert all(f"database 127.0.0.1:{port} unreachable" in line for line in attempts)
    assert all("refused" in line.lower() for line in attempts), attempts
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: database 127.0.0.1:")
    assert "gave up after" in last
    assert "CLOUDSTATE_START_TIMEOUT_SECONDS=3" in last
    assert took < 3 + 15  # the timeout is kept (plus the CLI's own start)


@contextmanager
def forwarder(listen_port: int, target: tuple[str, int]) -> Iterator[None]:
    """A TCP relay on loopback ``listen_port`` to ``target``, while the block runs."""
    server = socket.create_server(("127.0.0.1", listen_port))
    server.settimeout(0.2)
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            for pair in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=pair, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.postgres
def test_a_worker_started_before_its_database_comes_up_goes_on_once_it_answers(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The database is unreachable for the first ~2.5 s (nothing listens on its port), then
    answers: the worker logs its retries and then works (a burst run that ends idle, exit 0)."""
    migrated: str = request.getfixturevalue("_postgres_schema")
    truncate(migrated)
    real = make_url(migrated)
    port = free_port()
    url = real.set(port=port).render_as_string(hide_password=False)
    result: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run(tmp_path, url, "worker", "--burst", "--timeout", "30", timeout=30)
        )
    )
    worker.start()
    time.sleep(2.5)
    with forwarder(port, (real.host or "127.0.0.1", real.port or 5432)):
        worker.join(timeout=90)
    [done] = result
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"database 127.0.0.1:{port} unreachable (attempt 1)" in done.stderr

"""What every benchmark shares: a throwaway PostgreSQL database, the machine's description,
one line format for every figure, child processes that are always cleaned up, and a fleet of
tracked instances set up in bulk.

Each ``bench_*.py`` measures a reference in the same run and prints the ratio, because the
machine is shared and absolute figures are noisy; ratios travel better.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import insert, select

from cloudstate.config import Settings, load_settings
from cloudstate.engine.observations import observation
from cloudstate.providers.base import LaunchSpec
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service import accounts
from cloudstate.store import Store
from cloudstate.store.tables import Account, Instance
from cloudstate.testing import simulated_cloud

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", os.environ.get("CLOUDSTATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
)
CREATE_BATCH = 1000  # specs per simulator create_many call when setting a fleet up


# ------------------------------------------------------------------------------ arguments


@dataclass
class Options:
    quick: bool
    json_path: Path | None


def options(description: str) -> Options:
    """``--quick`` (a smoke run of seconds) and ``--json FILE`` (append results as JSON lines,
    which ``bench/_median.py`` turns into medians)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short smoke version (seconds)")
    parser.add_argument("--json", type=Path, default=None, help="append results to this file")
    args = parser.parse_args()
    for name in [key for key in os.environ if key.startswith("CLOUDSTATE_")]:
        del os.environ[name]  # the benchmarks set every setting they depend on themselves
    # SIGTERM unwinds like Ctrl-C, so the children are stopped and the database dropped
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    return Options(quick=args.quick, json_path=args.json)


# ------------------------------------------------------------------------------ reporting


@dataclass
class Result:
    name: str
    figure: float
    unit: str
    target: str
    ok: bool | None  # None: informative, no target
    reference: str = ""
    reference_figure: float | None = None
    ratio: float | None = None
    note: str = ""
    quick: bool = False


@dataclass
class Reporter:
    """Prints every figure on one line next to its target; keeps them for ``--json``."""

    bench: str
    opts: Options
    results: list[Result] = field(default_factory=list)

    def header(self) -> None:
        mode = "quick (smoke run, not the targets' conditions)" if self.opts.quick else "full"
        print(f"== {self.bench}: {mode}", flush=True)
        print("   " + describe_machine(machine()), flush=True)

    def report(
        self,
        name: str,
        figure: float,
        unit: str,
        target: str = "",
        ok: bool | None = None,
        *,
        reference: str = "",
        reference_figure: float | None = None,
        ratio: float | None = None,
        note: str = "",
    ) -> Result:
        result = Result(
            name,
            figure,
            unit,
            target,
            ok,
            reference,
            reference_figure,
            ratio,
            note,
            self.opts.quick,
        )
        self.results.append(result)
        print(format_result(result), flush=True)
        return result

    def save(self) -> None:
        if self.opts.json_path is None:
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with self.opts.json_path.open("a") as handle:
            for result in self.results:
                handle.write(
                    json.dumps({"bench": self.bench, "at": stamp, **asdict(result)}) + "\n"
                )


def format_result(result: Result) -> str:
    """``reconcile.observations_per_s  61,234 /s  target ≥ 50,000  OK  (reference: ...)``"""
    figure = f"{number(result.figure)} {result.unit}".strip()
    verdict = {True: "OK", False: "MISS", None: "info"}[result.ok]
    line = f"{result.name:<38} {figure:>16}  "
    line += f"target {result.target:<12} {verdict:<4}" if result.target else f"{'':<19} {verdict}"
    extras = []
    if result.reference:
        ref = result.reference
        if result.reference_figure is not None:
            ref += f" {number(result.reference_figure)} {result.unit}".rstrip()
        if result.ratio is not None:
            ref += f", ratio {result.ratio:.2f}"
        extras.append(f"reference: {ref}")
    if result.note:
        extras.append(result.note)
    if extras:
        line += "  (" + "; ".join(extras) + ")"
    return line


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def at_least(value: float, target: float) -> tuple[str, bool]:
    return f"≥ {number(target)}", value >= target


def below(value: float, target: float, *, inclusive: bool = False) -> tuple[str, bool]:
    sign = "≤" if inclusive else "<"
    return f"{sign} {number(target)}", value <= target if inclusive else value < target


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------ the machine


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, load, PostgreSQL and Python versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        total = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        ram = f"{int(total) / 1024 / 1024:.1f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "load": load,
        "postgres": postgres_version(),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
    }


def describe_machine(info: Mapping[str, str]) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM, load {info['load']}; "
        f"{info['postgres']}; Python {info['python']}; {info['os']}"
    )


def postgres_version() -> str:
    try:
        with psycopg.connect(POSTGRES, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable ({exc.__class__.__name__})"
    return f"PostgreSQL {row[0].split()[0]}" if row else "PostgreSQL ?"


# ------------------------------------------------------------------------------ PostgreSQL


@contextlib.contextmanager
def throwaway_database(tag: str) -> Iterator[str]:
    """A fresh database ``cloudstate_bench_<tag>_<pid>`` on the server; dropped afterwards."""
    name = f"cloudstate_bench_{tag}_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for stale in _stale_databases(conn):
            conn.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stale_databases(conn: psycopg.Connection[Any]) -> list[str]:
    """Databases of benchmarks whose process is gone (killed before it could drop them)."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'cloudstate\\_bench\\_%'"
    ).fetchall()
    stale = []
    for (name,) in rows:
        pid = name.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            stale.append(name)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def settings(home: Path, database_url: str, **overrides: Any) -> Settings:
    return load_settings(home=home, database_url=database_url, log_level="WARNING", **overrides)


def prepared_store(config: Settings) -> Store:
    """A store on ``config``'s database with the schema at the newest migration."""
    store = Store.from_settings(config)
    store.upgrade()
    return store


def env_for(config: Settings, **extra: str) -> dict[str, str]:
    """A child process environment carrying ``config`` as CLOUDSTATE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTATE_")}
    values = config.model_dump(mode="json", exclude={"secret_keys", "token", "url"})
    for key, value in values.items():
        if isinstance(value, list):
            value = ",".join(str(item) for item in value)
        env[f"CLOUDSTATE_{key.upper()}"] = str(value)
    env["CLOUDSTATE_LOG_FORMAT"] = "text"
    return {**env, **extra}


# ------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Children:
    """Child processes started by a benchmark: each in its own process group, stopped with
    SIGINT (then SIGKILL after a grace period) when the block ends, whatever happened."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Children:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        argv = profiled(name, argv)
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)  # its own group: py-spy and its child too
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def check(self) -> None:
        """Raise if a child died (its log's tail says why)."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the benchmark dies, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``), so no worker or server outlives its benchmark."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def profiled(name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``py-spy record`` when ``BENCH_PYSPY`` names this child (comma-separated
    names, e.g. ``BENCH_PYSPY=api``); the profile goes to ``BENCH_PYSPY_DIR`` (default
    /tmp/cloudstate-bench-profiles) as ``<name>.svg`` (or ``BENCH_PYSPY_FORMAT=raw``: folded
    stacks, ``<name>.txt``); ``BENCH_PYSPY_ARGS`` adds options (``--gil``: only samples holding
    the GIL, i.e. where the CPU goes)."""
    wanted = {part.strip() for part in os.environ.get("BENCH_PYSPY", "").split(",")}
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if name not in wanted or not Path(spy).exists():
        return list(argv)
    folder = Path(os.environ.get("BENCH_PYSPY_DIR", "/tmp/cloudstate-bench-profiles"))
    folder.mkdir(parents=True, exist_ok=True)
    kind = os.environ.get("BENCH_PYSPY_FORMAT", "flamegraph")
    out = folder / f"{name}.{'svg' if kind == 'flamegraph' else 'txt'}"
    extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()
    return [spy, "record", "--rate", "250", "--format", kind, "-o", str(out), *extra, "--", *argv]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a live process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# ------------------------------------------------------------------------------ a fleet


@dataclass(frozen=True)
class Fleet:
    """Tracked, running instances: ``provider_ids[uuid]`` on the simulator."""

    account_id: int
    account: str
    namespace: str
    provider_ids: dict[uuid.UUID, str]


def simulator(path: Path, **knobs: Any) -> SimulatedCloud:
    """A simulated cloud with instant transitions, no latency, and ``knobs``."""
    instant = {
        "boot_seconds": 0.0,
        "stop_seconds": 0.0,
        "reboot_seconds": 0.0,
        "shutdown_seconds": 0.0,
        "visibility_delay_seconds": 0.0,
        **knobs,
    }
    return simulated_cloud(path, **instant)


def add_simulator_account(store: Store, name: str, cloud_path: Path, namespace: str) -> int:
    """A simulator account on the cloud file ``cloud_path``; returns its id."""
    accounts.add_account(
        store, name, "simulator", config={"path": str(cloud_path), "namespace": namespace}
    )
    return account_id(store, name)


def account_id(store: Store, name: str) -> int:
    with store.read() as session:
        found = session.scalar(select(Account.id).where(Account.name == name))
    if found is None:
        raise LookupError(f"no account {name!r}")
    return int(found)


def track_fleet(
    store: Store, cloud: SimulatedCloud, account: str, namespace: str, count: int
) -> Fleet:
    """``count`` instances created on the simulator and stored as ours, running, exactly as a
    listing shows them (so a steady-state cycle finds nothing to change).

    Written in bulk: launching 100,000 instances through the launcher is what
    ``bench_launch`` measures at 1,000; here it would only make the setup slow.
    """
    owner = account_id(store, account)
    for start in range(0, count, CREATE_BATCH):
        specs = [
            LaunchSpec(uuid.uuid4(), f"bench-{n}", "img-basic", "small")
            for n in range(start, min(count, start + CREATE_BATCH))
        ]
        cloud.create_many(namespace, specs)
    listed = [observation(item) for item in cloud.instances(namespace)]
    seen = [item for item in listed if item is not None]
    past = datetime.now(UTC) - timedelta(minutes=10)
    rows = [
        {
            "uuid": item.uuid,
            "account_id": owner,
            "name": f"bench-{n}",
            "image": "img-basic",
            "hardware_profile": "small",
            "state": str(item.state),
            "raw_state": item.raw_state,
            "provider_id": item.provider_id,
            "public_addresses": list(item.public_addresses),
            "private_addresses": list(item.private_addresses),
            "key_fingerprint": item.key_fingerprint,
            "launched_at": past,
            "state_changed_at": past,
            "created_at": past,
            "event_seq": 0,
        }
        for n, item in enumerate(seen)
    ]
    with store.database.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Instance), rows[start : start + 5000])
    vacuum(store)
    return Fleet(owner, account, namespace, {item.uuid: item.provider_id for item in seen})


def vacuum(store: Store) -> None:
    """VACUUM ANALYZE, as autovacuum would have done on a database in use: fresh planner
    statistics and hint bits, so the first measured reads do not pay for a bulk load."""
    vacuum_url(store.database.url)


def vacuum_url(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def quiet_logs() -> None:
    """The engine logs warnings we provoke on purpose; keep the benchmark's output readable."""
    logging.getLogger("cloudstate").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ a receiver


class Receiver:
    """``bench/_receiver.py`` in its own process: counts and timestamps every webhook."""

    def __init__(self, children: Children, name: str = "receiver") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/hook"
        children.start(name, [PYTHON, str(BENCH / "_receiver.py"), str(self.port)])
        wait_for(self._up, 20.0, "the webhook receiver")

    def _up(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.base}/_count", timeout=1).status_code == 200
        return False

    def count(self) -> int:
        return int(httpx.get(f"{self.base}/_count", timeout=10).json()["count"])

    def records(self) -> list[tuple[float, str, str, str]]:
        return [tuple(item) for item in httpx.get(f"{self.base}/_records", timeout=60).json()]

    def reset(self) -> None:
        httpx.post(f"{self.base}/_reset", timeout=10)


# ------------------------------------------------------------------------------ HTTP load


@dataclass(frozen=True)
class Load:
    tool: str
    requests: int
    rps: float
    errors: int
    p50_ms: float
    p99_ms: float


def load(urls: Sequence[str], seconds: float, connections: int, token: str, workdir: Path) -> Load:
    """Closed-loop GET load from a separate process: ``wrk`` (one thread) when installed,
    else ``bench/_loadgen.py``. Cycles through ``urls``; returns the throughput and latency."""
    wrk = shutil.which("wrk")
    if wrk is None:
        argv = [PYTHON, str(BENCH / "_loadgen.py"), ",".join(urls), str(seconds), str(connections)]
        out = subprocess.run(
            [*argv, token], capture_output=True, text=True, check=True, timeout=seconds + 60
        ).stdout
        data = json.loads(out.strip().splitlines()[-1])
        return Load(
            "bench/_loadgen.py (aiohttp)",
            int(data["requests"]),
            data["rps"],
            int(data["errors"]),
            data["p50_ms"],
            data["p99_ms"],
        )
    base = urls[0].split("/", 3)
    root = f"{base[0]}//{base[2]}"
    paths = ", ".join(json.dumps("/" + url.split("/", 3)[3]) for url in urls)
    script = workdir / f"wrk-{os.getpid()}-{time.monotonic_ns()}.lua"
    script.write_text(
        f"local paths = {{{paths}}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        "  return wrk.format('GET', paths[(i % #paths) + 1])\nend\n"
    )
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency"]
    argv += ["-s", str(script)]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(
        [*argv, root], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return _parse_wrk(out)


def _parse_wrk(out: str) -> Load:
    def millis(text: str) -> float:
        value, unit = float(text[:-2] if text[-2:] in ("us", "ms") else text[:-1]), text[-2:]
        return value / 1000 if unit == "us" else value if unit == "ms" else value * 1000

    requests = rps = 0.0
    errors = 0
    p50 = p99 = float("nan")
    for line in out.splitlines():
        words = line.split()
        if line.strip().startswith("50%"):
            p50 = millis(words[1])
        elif line.strip().startswith("99%"):
            p99 = millis(words[1])
        elif "requests in" in line:
            requests = float(words[0])
        elif line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif "Non-2xx or 3xx responses:" in line:
            errors += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(part.split()[-1]) for part in line.split(":", 1)[1].split(","))
    return Load("wrk (1 thread)", int(requests), rps, errors, p50, p99)


def bench_main(
    area: str, description: str, run: Callable[[Options, Reporter, Path, str], None]
) -> None:
    """What every script's ``main`` does: parse the options, then ``run`` with a reporter, a
    scratch folder and a throwaway database of the area's own; print and save the figures."""
    opts = options(description)
    quiet_logs()
    reporter = Reporter(area, opts)
    reporter.header()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="cloudstate-bench-") as tmp,
        throwaway_database(area) as url,
    ):
        run(opts, reporter, Path(tmp), url)
    reporter.save()
    print(f"   ({time.perf_counter() - started:.0f} s)")

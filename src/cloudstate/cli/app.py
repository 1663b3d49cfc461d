"""Commands: ``serve``, ``api`` and ``worker`` run the engine; ``db`` manages the schema;
``keys`` the encryption keys. The API's commands are in ``commands`` (and ``simulator``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cloudstate.cli.commands import register
from cloudstate.cli.group import CloudstateGroup
from cloudstate.cli.simulator import sim_app
from cloudstate.config import Settings, load_settings
from cloudstate.exceptions import CloudStateError
from cloudstate.logs import configure as configure_logging
from cloudstate.version import __version__

app = typer.Typer(
    name="cloudstate",
    help="A stateful control plane for cloud instances.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=CloudstateGroup,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys that encrypt secrets at rest.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sim_app, name="simulator")
app.add_typer(keys_app, name="keys")
register(app)  # the API commands: token, account, orders, launch, ls, show, actions, watch, events

console = Console()
errors = Console(stderr=True)


def main() -> None:
    """Entry point: every cloudstate error becomes one clear line and exit status 1."""
    try:
        app()
    except CloudStateError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # one line
        sys.exit(1)


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings)
    return settings


Host = Annotated[str | None, typer.Option(help="Listen address (CLOUDSTATE_HOST).")]
Port = Annotated[int | None, typer.Option(help="Listen port (CLOUDSTATE_PORT).")]


@app.command()
def serve(host: Host = None, port: Port = None) -> None:
    """API and every worker on the embedded default (SQLite + simulator) until Ctrl-C."""
    from cloudstate.api import ApiContext
    from cloudstate.embedded import CloudState

    settings = _listening(_settings(), host, port)
    with CloudState(settings=settings, log_events=True) as cs:
        _announce_token(cs.store, settings)
        cs.start()
        context = ApiContext(settings, cs.store, cs.engine.pool, wake=cs.engine.wake)
        errors.print(
            f"cloudstate {__version__} on {settings.api_url} ({_where(settings)}, home "
            f"{settings.home}); API docs at {settings.api_url}/docs; Ctrl-C stops"
        )
        _run_api(context)


@app.command()
def api(host: Host = None, port: Port = None) -> None:
    """The REST API only (put several behind a load balancer; run workers separately)."""
    from cloudstate.api import ApiContext
    from cloudstate.api.app import POOL_SIZE
    from cloudstate.engine.drivers import DriverPool
    from cloudstate.startup import open_store

    settings = _listening(_settings(), host, port)
    store = open_store(settings, pool_size=POOL_SIZE, max_overflow=0)
    _announce_token(store, settings)
    pool = DriverPool(store, settings.home)
    try:
        _run_api(ApiContext(settings, store, pool))
    finally:
        pool.close()
        store.close()


@app.command()
def worker(
    burst: Annotated[
        bool, typer.Option(help="Work until nothing is left, then exit (0 idle, 6 timed out).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Burst time limit in seconds.")] = 300.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus counters on this port.")
    ] = None,
) -> None:
    """Run the workers only (many may share one PostgreSQL); no default account is created."""
    from cloudstate.embedded import CloudState

    settings = _settings()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.host)
    with CloudState(settings=settings, default_account=False, log_events=True) as cs:
        if burst:
            sys.exit(0 if cs.burst(timeout) else 6)
        cs.run()


def _listening(settings: Settings, host: str | None, port: int | None) -> Settings:
    changes = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    return settings.model_copy(update=changes) if changes else settings


def _announce_token(store: Any, settings: Settings) -> None:
    from cloudstate.service.tokens import bootstrap_admin_token

    plaintext = bootstrap_admin_token(store, settings.token_path)
    if plaintext:
        errors.print(
            f"[bold]admin token[/bold] (shown once; saved to {settings.token_path}):\n{plaintext}"
        )


def _run_api(context: Any) -> None:
    import uvicorn

    from cloudstate.api import create_app
    from cloudstate.engine.loop import handle_signals

    class Server(uvicorn.Server):
        """uvicorn re-raises the SIGTERM/SIGINT that stopped it, which kills the process
        (exit 143) before ``serve`` can stop its workers; this one just returns."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            with handle_signals(self.stop):
                yield

        def stop(self) -> None:
            self.force_exit = self.should_exit  # a second signal: do not wait for requests
            self.should_exit = True

    settings = context.settings
    config = uvicorn.Config(
        create_app(context),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    Server(config).run()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (safe to run from several hosts at once)."""
    from cloudstate.startup import private_database_file
    from cloudstate.store.database import Database

    settings = _settings()
    private_database_file(settings.database_url)
    database = Database(settings.database_url)
    before = database.current_revision()
    database.upgrade()
    console.print(f"database at revision {database.current_revision()} (was {before or 'empty'})")
    database.dispose()


@keys_app.command("new")
def keys_new() -> None:
    """Print a new random key for CLOUDSTATE_SECRET_KEYS (nothing is stored)."""
    from cloudstate.store.crypto import new_key

    console.print(new_key(), highlight=False)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the newest key (the first of
    CLOUDSTATE_SECRET_KEYS); afterwards the older keys can be removed."""
    from cloudstate.service.keys import rotate_all
    from cloudstate.store import Store

    store = Store.from_settings(_settings())
    try:
        done = rotate_all(store)
    finally:
        store.close()
    console.print(
        f"re-encrypted {done.credentials} account credential(s), {done.key_material} private "
        f"key(s) and {done.webhook_secrets} webhook secret(s) under the newest key"
    )


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision and whether it is the newest this code knows."""
    from cloudstate.store.database import Database

    database = Database(_settings().database_url)
    current, head = database.current_revision(), database.head_revision()
    state = "current" if current == head else f"behind (newest is {head})"
    console.print(f"revision {current or 'none'}: {state}")
    database.dispose()


def _where(settings: Settings) -> str:
    return "SQLite" if settings.is_sqlite else "PostgreSQL"

"""``cloudstate token ...`` and ``cloudstate account ...`` (admin scope)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from cloudstate.cli.connect import Json, connect, pairs
from cloudstate.cli.output import accounts_table, err, out, print_json, tokens_table
from cloudstate.client.models import Token
from cloudstate.exceptions import StoreError

token_app = typer.Typer(help="API tokens (admin).", no_args_is_help=True)
account_app = typer.Typer(help="Provider accounts.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: str,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", "-s", help="read, write or admin (repeatable; admin ⊃ write ⊃ read)."
        ),
    ] = None,
    as_json: Json = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Write the token to the database directly (CLOUDSTATE_DATABASE_URL), without "
            "the API: the way back in when no admin token is left.",
        ),
    ] = False,
) -> None:
    """Create a token and print it: this is the only time it is shown."""
    if local:
        token, plaintext = _create_locally(name, scope or ["read"])
    else:
        with connect(ctx) as client:
            token, plaintext = client.create_token(name, scope or ["read"])
    if as_json:
        print_json(token)
        return
    scopes = ", ".join(token.scopes)
    err.print(f"token [bold]{escape(token.name)}[/bold] ({scopes}); shown once, store it now:")
    out.print(plaintext, soft_wrap=True)


def _create_locally(name: str, scopes: list[str]) -> tuple[Token, str]:
    """The token made on the store this host's settings name (its schema must be current)."""
    from cloudstate.config import load_settings
    from cloudstate.service.tokens import create_token
    from cloudstate.store import Store

    store = Store.from_settings(load_settings(), pool_size=1)
    try:
        if not store.database.is_current():
            raise StoreError("the database schema is not current; run 'cloudstate db upgrade'")
        view, plaintext = create_token(store, name, scopes)
    finally:
        store.close()
    shown = Token(
        id=view.id,
        name=view.name,
        prefix=view.prefix,
        scopes=list(view.scopes),
        created_at=view.created_at,
        last_used_at=view.last_used_at,
        revoked_at=view.revoked_at,
        token=plaintext,
    )
    return shown, plaintext


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every token (never the secret itself: only its first characters)."""
    with connect(ctx) as client:
        tokens = client.tokens()
    if as_json:
        print_json(tokens)
    else:
        out.print(tokens_table(tokens))


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: str, as_json: Json = False) -> None:
    """Revoke a token by name (or id); requests with it are refused from now on."""
    with connect(ctx) as client:
        token = client.revoke_token(name)
    if as_json:
        print_json(token)
    else:
        err.print(f"token [bold]{escape(token.name)}[/bold] revoked")


def _config(values: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON (``3``, ``true``) is taken as such."""
    parsed: dict[str, Any] = {}
    for key, value in pairs(values, "--config").items():
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed


@account_app.command("add")
def account_add(
    ctx: typer.Context,
    name: str,
    provider: Annotated[str, typer.Option(help="The driver: simulator, ec2, libcloud, ...")],
    config: Annotated[
        list[str] | None,
        typer.Option("--config", "-c", metavar="KEY=VALUE", help="Driver setting (repeatable)."),
    ] = None,
    credential: Annotated[
        list[str] | None,
        typer.Option("--credential", metavar="KEY=VALUE", help="Secret, write-only (repeatable)."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Add a provider account (the server checks the settings by building its driver)."""
    with connect(ctx) as client:
        account = client.add_account(
            name,
            provider,
            config=_config(config),
            credentials=pairs(credential, "--credential"),
        )
    if as_json:
        print_json(account)
    else:
        out.print(accounts_table([account]))


@account_app.command("list")
def account_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every account, with its status (credentials are never shown)."""
    with connect(ctx) as client:
        accounts = client.accounts()
    if as_json:
        print_json(accounts)
    else:
        out.print(accounts_table(accounts))


@account_app.command("verify")
def account_verify(ctx: typer.Context, name: str, as_json: Json = False) -> None:
    """Check an account's credentials with the provider (one cheap call)."""
    with connect(ctx) as client:
        ok = client.verify_account(name)
    if as_json:
        print_json({"ok": ok})
    else:
        err.print(f"account [bold]{escape(name)}[/bold]: the provider accepted the credentials")


@account_app.command("rm")
def account_rm(ctx: typer.Context, name: str) -> None:
    """Remove an account that has no live instances (destroy them first)."""
    with connect(ctx) as client:
        client.remove_account(name)
    err.print(f"account [bold]{escape(name)}[/bold] removed")

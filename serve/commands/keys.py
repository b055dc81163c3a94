"""`zkserve keys create | list | revoke`: the API keys the ingress and the verifier accept."""

from __future__ import annotations

import datetime
from pathlib import Path

import typer
from rich.table import Table

from serve.commands.progress import console
from serve.config import ConfigError, load_config
from serve.security import RIGHTS, InsecureFile, KeyStore, KeyStoreError, keys_path

CONFIG_OPTION = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file")
KEYS_FILE_OPTION = typer.Option(None, "--keys-file", dir_okay=False,
                                help="key store (default: verifier.keys_file, else <state dir>/auth/keys.json)")

keys_app = typer.Typer(help="API keys: create (the token is shown once), list, revoke.", no_args_is_help=True)


def _store(config: Path | None, keys_file: Path | None) -> KeyStore:
    try:
        zk = load_config(config)["zkserve"]
    except ConfigError as error:
        console.print(f"[red]config:[/red] {error}")
        raise typer.Exit(2) from None
    return KeyStore(keys_path(zk["state_dir"], keys_file or zk["verifier"]["keys_file"]))


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}")
    raise typer.Exit(1)


def _when(stamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC") if stamp else ""


@keys_app.command("create")
def create_command(
    name: str = typer.Argument(..., help="who or what the key is for (shown by `keys list`)"),
    right: list[str] = typer.Option(..., "--right", help=f"a right of the key (repeatable): {', '.join(RIGHTS)}"),
    requests_per_s: float | None = typer.Option(None, help="this key's quota (default: the service's)"),
    config: Path | None = CONFIG_OPTION,
    keys_file: Path | None = KEYS_FILE_OPTION,
) -> None:
    """Create a key; its token is printed once and stored only as a salted hash."""
    store = _store(config, keys_file)
    try:
        key, token = store.create(name, right, requests_per_s)
    except (KeyStoreError, InsecureFile) as error:
        _fail(error)
    console.print(f"key {key.key_id} ({key.name}; rights: {', '.join(key.rights)}) in {store.path}", highlight=False)
    console.print("token (shown only now; send it as 'authorization: Bearer <token>'):", highlight=False)
    print(token, flush=True)  # plain stdout, so `zkserve keys create ... | tail -1` captures it


@keys_app.command("list")
def list_command(config: Path | None = CONFIG_OPTION, keys_file: Path | None = KEYS_FILE_OPTION) -> None:
    """List keys (ids, names, rights, state); tokens are never stored, so never shown."""
    store = _store(config, keys_file)
    try:
        keys = store.api_keys()
    except (KeyStoreError, InsecureFile) as error:
        _fail(error)
    if not keys:
        console.print(f"no API keys in {store.path}; create one with `zkserve keys create NAME --right predict`")
        return
    table = Table("key id", "name", "rights", "requests/s", "created", "revoked")
    for key in keys:
        table.add_row(key.key_id, key.name, ",".join(key.rights),
                      "" if key.requests_per_s is None else f"{key.requests_per_s:g}",
                      _when(key.created), _when(key.revoked))
    console.print(table)


@keys_app.command("revoke")
def revoke_command(key_id: str = typer.Argument(..., help="the key id `keys list` shows"),
                   config: Path | None = CONFIG_OPTION, keys_file: Path | None = KEYS_FILE_OPTION) -> None:
    """Revoke a key; running services refuse it from their next request."""
    store = _store(config, keys_file)
    try:
        key = store.revoke(key_id)
    except (KeyStoreError, InsecureFile) as error:
        _fail(error)
    console.print(f"key {key.key_id} ({key.name}) revoked", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")

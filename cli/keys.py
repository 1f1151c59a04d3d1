"""`carechain keys`: create, list, show, export and import key files under `<home>/keys/`."""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

import click

from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.cli.passphrase import obtain_passphrase, passphrase_option
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.node.wallet.keystore import (
    KeyInfo,
    KeyPurpose,
    KeystoreError,
    key_path,
    keys_dir,
    load_key,
    read_key_info,
    save_key,
)

HOME_ENVIRONMENT_VARIABLE = "CARECHAIN_HOME"

HOME_OPTION = click.option(
    "--home",
    required=True,
    envvar=HOME_ENVIRONMENT_VARIABLE,
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's home folder.",
)


def info_json(info: KeyInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "purpose": info.purpose,
        "public_key": info.public_key.hex(),
        "address": info.address,
        "peer_id": peer_id(info.public_key),
        "encrypted": info.encrypted,
        "path": str(info.path),
    }


@click.group()
def keys() -> None:
    """Manage key files (encrypted with argon2id + secretbox)."""


@keys.command("new")
@HOME_OPTION
@click.option("--name", required=True, help="Key name, e.g. hospital-a-admin.")
@click.option(
    "--purpose",
    type=click.Choice(["account", "validator", "node"]),
    default="account",
    show_default=True,
)
@click.option("--insecure-plaintext", is_flag=True, help="Development only: no encryption.")
@passphrase_option
@json_option
def keys_new(
    home: Path,
    name: str,
    purpose: str,
    insecure_plaintext: bool,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create a new Ed25519 key."""
    path = key_path(home, name)
    if path.exists():
        raise KeystoreError(f"{path} exists already", hint="choose another --name")
    passphrase = None if insecure_plaintext else obtain_passphrase(passphrase_file, confirm=True)
    info = save_key(
        path,
        PrivateKey.generate(),
        name=name,
        purpose=typing.cast(KeyPurpose, purpose),
        passphrase=passphrase,
    )
    if as_json:
        emit_json(info_json(info))
    else:
        console.print(f"created {info.purpose} key [bold]{name}[/bold] at {path}")
        console.print(f"address {info.address}")


@keys.command("list")
@HOME_OPTION
@json_option
def keys_list(home: Path, as_json: bool) -> None:
    """List the key files of a home folder."""
    if not keys_dir(home).is_dir():
        raise KeystoreError(
            f"{home} holds no keys folder", hint="check --home (`carechain keys new` makes one)"
        )
    infos = [read_key_info(p) for p in sorted(keys_dir(home).glob("*.json"))]
    if as_json:
        emit_json([info_json(i) for i in infos])
        return
    table = human_table("name", "purpose", "address", "encrypted")
    for info in infos:
        table.add_row(info.name, info.purpose, info.address, "yes" if info.encrypted else "NO")
    console.print(table)


@keys.command("show")
@HOME_OPTION
@click.argument("name")
@json_option
def keys_show(home: Path, name: str, as_json: bool) -> None:
    """Show one key's public details (no passphrase needed)."""
    info = read_key_info(key_path(home, name))
    if as_json:
        emit_json(info_json(info))
    else:
        for field, value in info_json(info).items():
            console.print(f"{field:>10}  {value}")


@keys.command("export")
@HOME_OPTION
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@passphrase_option
@json_option
def keys_export(
    home: Path, name: str, out: Path, passphrase_file: Path | None, as_json: bool
) -> None:
    """Copy an (encrypted) key file out, after checking the passphrase opens it."""
    source = key_path(home, name)
    info = read_key_info(source)
    if info.encrypted:
        load_key(source, obtain_passphrase(passphrase_file, confirm=False))
    if out.exists():
        raise KeystoreError(f"{out} exists already; not overwriting it")
    shutil.copyfile(source, out)
    out.chmod(0o600)
    if as_json:
        emit_json({**info_json(info), "out": str(out)})
    else:
        console.print(f"exported {name} to {out}")


@keys.command("import")
@HOME_OPTION
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", help="Name to store it under (default: the name in the file).")
@json_option
def keys_import(home: Path, file: Path, name: str | None, as_json: bool) -> None:
    """Copy a key file into this home after checking it is a carechain key file."""
    info = read_key_info(file)
    target = key_path(home, name or info.name)
    if target.exists():
        raise KeystoreError(f"{target} exists already", hint="pass --name to choose another")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    target.chmod(0o600)
    if as_json:
        emit_json({**info_json(read_key_info(target)), "path": str(target)})
    else:
        console.print(f"imported {info.purpose} key {target.stem} ({info.address})")

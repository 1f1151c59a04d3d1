"""`carechain institution`: an institution's planned key rotation (rotate to a new key, then
reseal its epoch key copies to it). A compromised key is not rotated: governance revokes it
and registers the institution's new key (`carechain governance propose`)."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.node.wallet.client import Client
from carechain.node.wallet.institution_actions import reseal, rotate_key


@click.group()
def institution() -> None:
    """An institution's own key: rotate it, reseal its copies of epoch keys."""


@institution.command("rotate-key")
@flow_options
@click.option("--key", "key_name", required=True, help="The key the institution signs with now.")
@click.option("--new", "new_name", required=True, help="The new key's name (`carechain keys new`).")
@json_option
def institution_rotate_key(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    key_name: str,
    new_name: str,
    as_json: bool,
) -> None:
    """Rotate the institution's key (signed by the key now and the new one), then reseal every
    epoch key copy it holds to the new key. Keep the old key file until the reseal is done;
    if it stops half way, `carechain institution reseal` finishes it."""
    context = make_context(home, api, passphrase_file)
    old, new = context.key(key_name), context.key(new_name)
    rotation = rotate_key(context, old, new)
    answer = context.send(rotation)
    resealed = reseal(context, old, new)
    if as_json:
        emit_json({"rotation": {**answer, "id": rotation.id.hex()}, "reseal": resealed})
        return
    report_outcome(answer, "key rotated")
    _say_resealed(resealed)


@institution.command("reseal")
@flow_options
@click.option("--old", "old_name", required=True, help="The key the institution rotated from.")
@click.option("--key", "key_name", required=True, help="The key the institution signs with now.")
@json_option
def institution_reseal(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    old_name: str,
    key_name: str,
    as_json: bool,
) -> None:
    """Reseal to the key now every epoch key copy still sealed to the old key (after a
    rotation that stopped half way; running it again does nothing more)."""
    context = make_context(home, api, passphrase_file)
    resealed = reseal(context, context.key(old_name), context.key(key_name))
    if as_json:
        emit_json(resealed)
        return
    _say_resealed(resealed)


def _say_resealed(resealed: dict[str, object]) -> None:
    transactions = resealed["transactions"]
    assert isinstance(transactions, list)
    console.print(
        f"{resealed['resealed']} epoch key copies resealed to the new key "
        f"in {len(transactions)} transaction(s)"
    )
    if resealed["unopened"]:
        console.print(
            f"{resealed['unopened']} copies open with neither key (sealed to an older key): "
            "reseal them with that key as --old",
            style="bold red",
        )


@institution.command("list")
@click.option("--api", required=True, help="A node's API URL.")
@json_option
def institution_list(api: str, as_json: bool) -> None:
    """The registered institutions: name, kind, the key that names them on chain, the key they
    sign with now, and whether governance revoked them."""
    listed = Client(api).get("/v1/institutions")["institutions"]
    if as_json:
        emit_json(listed)
        return
    table = human_table("name", "kind", "named by", "signs with", "active")
    for found in listed:
        now = "(the same)" if found["key"] == found["public_key"] else found["key"][:16] + "..."
        table.add_row(
            found["name"], found["kind"], found["public_key"][:16] + "...", now,
            "yes" if found["active"] else f"revoked at {found['revoked_height']}",
            style="" if found["active"] else "red",
        )  # fmt: skip
    console.print(table)

"""`carechain light`: read a node's answers as a light client, believing only what verifies
against the user's own genesis (see `node/light/client.py`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.markup import escape
from rich.table import Table as RichTable

from carechain.cli.output import EXIT_FAILED, console, emit_json, error_console, json_option
from carechain.config.genesis import load_genesis
from carechain.consensus.codec import Record, to_json
from carechain.consensus.crypto import decode_address
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.records import Account, Recovery, Vault
from carechain.consensus.ledger.state import Table
from carechain.consensus.light.verifier import Trusted, VerificationError
from carechain.node.light.client import LightClient, NodeSource, Verified
from carechain.node.light.lists import ITEMS, PATIENT_LISTS, VAULT_LISTS, list_query
from carechain.node.wallet.client import Client
from carechain.node.wallet.context import hex_bytes

# what `light get KIND` reads: its table and the record its value holds (None: raw bytes)
KINDS: dict[str, tuple[Table, type[Record]]] = {
    "account": (Table.ACCOUNT, Account),
    "vault": (Table.VAULT, Vault),
    "recovery": (Table.RECOVERY, Recovery),
}
# what one line of a list shows, by kind
COLUMNS: dict[str, tuple[str, ...]] = {
    "vaults": ("data_type", "vault_id", "epoch", "record_count", "receipt_count"),
    "holders": ("key",),
    "timeline": ("height", "kind", "data_type", "actor", "detail"),
    "grants": ("grant_id", "grantee", "access", "purpose", "valid_until_ms", "revoked_height"),
    "emergencies": ("emergency_id", "hospital", "reason", "until_ms", "status"),
    "records": ("record_id", "data_type", "record_time_ms", "size_bytes", "erased_height"),
    "receipts": ("height", "record_id", "reader", "grant_id"),
}


T = TypeVar("T")


def light_options(function: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--api",
                "apis",
                multiple=True,
                required=True,
                help="A node's API URL; the first is asked, the others are witnesses.",
            ),
            click.option(
                "--genesis",
                "genesis_path",
                type=click.Path(path_type=Path, exists=True, dir_okay=False),
                required=True,
                help="Your own copy of the network's genesis.json: the root of trust.",
            ),
            click.option(
                "--home",
                type=click.Path(path_type=Path, file_okay=False),
                required=True,
                help="Where the light client keeps the headers it trusts.",
            ),
            click.option(
                "--trusting-period-days",
                type=click.IntRange(1, 3650),
                default=14,
                show_default=True,
                help="How long a trusted header's validators are trusted to stay honest.",
            ),
        ]
    ):
        function = option(function)
    return function


def light_client(apis: tuple[str, ...], genesis_path: Path, home: Path, days: int) -> LightClient:
    sources = [NodeSource(Client(api)) for api in apis]
    return LightClient(
        load_genesis(genesis_path),
        home,
        sources[0],
        sources[1:],
        trusting_period_ms=days * 24 * 3600 * 1000,
    )


def refuse(exc: VerificationError) -> NoReturn:
    error_console.print(f"[red]not verified:[/red] {escape(str(exc))}", soft_wrap=True)
    sys.exit(EXIT_FAILED)


def verified_read(
    apis: tuple[str, ...],
    genesis_path: Path,
    home: Path,
    trusting_period_days: int,
    read: Callable[[LightClient], T],
) -> T:
    """What `read` gets through a light client over `apis`, its witnesses' warnings said;
    exit 1 with the reason when the answer does not verify."""
    client = light_client(apis, genesis_path, home, trusting_period_days)
    try:
        found = read(client)
    except VerificationError as exc:
        refuse(exc)
    say_warnings(client)
    return found


@click.group()
def light() -> None:
    """Verified reads: headers, validator-set changes and state proofs checked against your
    genesis, not believed from one node."""


@light.command("sync")
@light_options
@json_option
def light_sync(
    apis: tuple[str, ...], genesis_path: Path, home: Path, trusting_period_days: int, as_json: bool
) -> None:
    """Trust the first node's newest header (checked by the others when given)."""
    warnings: list[str] = []

    def sync(client: LightClient) -> Trusted:
        found = client.sync()
        warnings.extend(client.warnings)
        return found

    trusted = verified_read(apis, genesis_path, home, trusting_period_days, sync)
    if as_json:
        emit_json(
            {
                "height": trusted.height,
                "hash": trusted.block_hash.hex(),
                "signed_power": trusted.signed_power,
                "total_power": trusted.total_power,
                "warnings": warnings,
            }
        )
        return
    console.print(
        f"trusted height {trusted.height} ({trusted.block_hash.hex()[:16]}): "
        f"{trusted.verified_by()}"
    )


@light.command("get")
@click.argument("kind", type=click.Choice([*KINDS, "state", *PATIENT_LISTS, *VAULT_LISTS]))
@click.argument("name")
@click.argument("key", required=False)
@click.option("--first", type=click.IntRange(0), default=0, help="records, receipts: from number")
@click.option("--limit", type=click.IntRange(0), help="records, receipts: how many (default all)")
@click.option("--reader", help="receipts: only this reader's (its key, hex)")
@light_options
@json_option
def light_get(
    kind: str,
    name: str,
    key: str | None,
    first: int,
    limit: int | None,
    reader: str | None,
    apis: tuple[str, ...],
    genesis_path: Path,
    home: Path,
    trusting_period_days: int,
    as_json: bool,
) -> None:
    """Read one entry, verified: `account ADDRESS`, `vault ID`, `recovery ADDRESS`, or
    `state TABLE KEY` (a raw entry, its key in hex). Absence is proved too.

    Or a whole list, proved complete: `vaults ADDRESS` and `timeline ADDRESS` (a patient's),
    `grants ID`, `emergencies ID`, `records ID` and `receipts ID` (a vault's)."""
    if kind in PATIENT_LISTS or kind in VAULT_LISTS:
        reader_key = None if reader is None else hex_bytes(reader, 32, "--reader")
        _get_list(
            kind, name, (first, limit, reader_key), apis, genesis_path, home,
            trusting_period_days, as_json,
        )  # fmt: skip
        return
    table, entry_key, kind_type = _entry_of(kind, name, key)
    found = verified_read(
        apis, genesis_path, home, trusting_period_days, lambda c: c.get(table, entry_key)
    )
    value: Any = None
    if found.value is not None:
        value = found.value.hex() if kind_type is None else to_json(kind_type.decode(found.value))
    if as_json:
        emit_json(
            {
                "table": table.name.lower(),
                "key": entry_key.hex(),
                "value": value,
                "height": found.trusted.height,
                "signed_power": found.trusted.signed_power,
                "total_power": found.trusted.total_power,
            }
        )
        return
    console.print("absent (proved)" if value is None else value)
    console.print(found.trusted.verified_by())


def _get_list(
    kind: str,
    name: str,
    page: tuple[int, int | None, bytes | None],
    apis: tuple[str, ...],
    genesis_path: Path,
    home: Path,
    trusting_period_days: int,
    as_json: bool,
) -> None:
    genesis = load_genesis(genesis_path)
    path, read = list_query(kind, _id_of(kind, name), genesis, *page)
    found: Verified[dict[str, Any]] = verified_read(
        apis, genesis_path, home, trusting_period_days, lambda c: c.query(path, read)
    )
    trusted = found.trusted
    answer = dict(found.value)
    items = answer.pop(ITEMS[kind])  # the list, under the kind's own name on the command line
    if as_json:
        emit_json(
            {
                **answer,
                kind: items,
                "height": trusted.height,
                "signed_power": trusted.signed_power,
                "total_power": trusted.total_power,
                "entries_proved": found.entries,
            }
        )
        return
    if kind == "holders":
        items = [{"key": key} for key in items]
    if kind == "timeline":
        names = answer["names"]
        items = [{**i, "actor": names.get(i["actor"], i["actor"] or "patient")} for i in items]
    table = RichTable(*COLUMNS[kind], box=None, pad_edge=False)
    for item in items:
        table.add_row(*(_cell(item.get(column)) for column in COLUMNS[kind]))
    console.print(table)
    count = answer.get("count")
    whole = f"{len(items)} of {count}" if count is not None else f"all {len(items)}"
    console.print(f"{whole} {kind}, proved complete by {found.entries} entries")
    console.print(trusted.verified_by())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return escape(", ".join(f"{k}={_cell(v)}" for k, v in value.items() if v is not None))
    text = str(value)
    return escape(text[:16] if len(text) == 64 or len(text) == 40 else text)


def _id_of(kind: str, name: str) -> bytes:
    try:
        if kind in PATIENT_LISTS:
            return decode_address(name) if name.startswith("cc1") else bytes.fromhex(name)
        found = bytes.fromhex(name)
        if len(found) != 20:
            raise ValueError(name)
        return found
    except ValueError:
        raise InvalidInput(
            f"{name!r} does not name a {'patient' if kind in PATIENT_LISTS else 'vault'}",
            hint="a patient's address (cc1...) or a vault's id (40 hex digits)",
        ) from None


def _entry_of(kind: str, name: str, key: str | None) -> tuple[Table, bytes, type[Record] | None]:
    try:
        if kind == "state":
            table = Table.of_label(name)
            if key is None or table is None:
                raise InvalidInput(
                    "`light get state` takes a table and a key (hex)",
                    hint=f"tables: {', '.join(t.label for t in Table)}",
                )
            return table, bytes.fromhex(key), None
        table, kind_type = KINDS[kind]
        entry = decode_address(name) if name.startswith("cc1") else bytes.fromhex(name)
    except (KeyError, ValueError):
        raise InvalidInput(
            f"{name!r} {key or ''} does not name a {kind}",
            hint="an address (cc1...) or hex id; for state, a table name and a hex key",
        ) from None
    return table, entry, kind_type


def say_warnings(client: LightClient) -> None:
    for warning in client.warnings:
        error_console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)

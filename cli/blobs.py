"""`carechain blob`: put an encrypted file in a node's blob store, get one, check a file
against its content id, and move a blob in and out as a CAR file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, vault_arg
from carechain.cli.keys import HOME_ENVIRONMENT_VARIABLE
from carechain.cli.output import EXIT_FAILED, console, emit_json, error_console, json_option
from carechain.config.node import load_node_config
from carechain.consensus.cid import parse_cid
from carechain.consensus.crypto import stream_ciphertext_bytes
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.blob_access import REQUEST_HEADER
from carechain.node.wallet.context import hex_bytes, institution_kind
from carechain.node.wallet.patient_actions import gateway_request
from carechain.storage.blobs.backends import open_blob_store
from carechain.storage.blobs.car import read_car, write_car
from carechain.storage.blobs.store import BlobStore, content_id_of


@click.group()
def blob() -> None:
    """The node's blob store (ciphertext only)."""


@blob.command("put")
@flow_options
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def blob_put(
    home: Path, api: str | None, passphrase_file: Path | None, path: Path, as_json: bool
) -> None:
    """Store a file's bytes (already encrypted); print its content id."""
    context = make_context(home, api, passphrase_file)
    content_id = context.client.blob_put(path.read_bytes())
    if as_json:
        emit_json({"content_id": content_id, "bytes": path.stat().st_size})
    else:
        console.print(content_id)


@blob.command("get")
@flow_options
@click.argument("cid")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def blob_get(
    home: Path, api: str | None, passphrase_file: Path | None, cid: str, out: Path, as_json: bool
) -> None:
    """Read a blob held by this node (each chunk verified against its content id)."""
    context = make_context(home, api, passphrase_file)
    data = context.client.request("GET", f"/v1/blobs/{cid}")
    out.write_bytes(data)
    if as_json:
        emit_json({"content_id": cid, "bytes": len(data), "out": str(out)})
    else:
        console.print(f"wrote {len(data):,} bytes to {out}")


@blob.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("cid")
@json_option
def blob_verify(path: Path, cid: str, as_json: bool) -> None:
    """Check that a file is the blob a content id names (no node needed); exit 1 if not."""
    actual = content_id_of(path.read_bytes())
    if as_json:
        emit_json({"path": str(path), "content_id": actual, "matches": actual == cid})
    elif actual == cid:
        console.print(f"{path} matches {cid}")
    else:
        error_console.print(f"[red]mismatch:[/red] {path} is {actual}, not {cid}")
    if actual != cid:  # a check that failed, not a bad input: exit 1
        sys.exit(EXIT_FAILED)


@blob.command("request")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--record", "record_hex", required=True)
@click.option("--key", "key_name", required=True, help="The reader's key name.")
@click.option("--grant", "grant_hex", default="", help="Grant id the reader reads under.")
@json_option
def blob_request(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    record_hex: str,
    key_name: str,
    grant_hex: str,
    as_json: bool,
) -> None:
    """Sign a request for a record's blob, for IPFS tools: the header the node's gateway
    route (GET /ipfs/CID) asks for. An institution's read receipt commits first."""
    context = make_context(home, api, passphrase_file)
    reader = context.key(key_name)
    grant_id = hex_bytes(grant_hex, 32, "--grant") if grant_hex else b""
    entry, request = gateway_request(
        context, reader, vault_arg(vault_hex), bytes.fromhex(record_hex), grant_id=grant_id
    )
    header, url = REQUEST_HEADER, f"{context.client.base_url}/ipfs/{entry.content_id}"
    receipt = institution_kind(context, reader.public_key) is not None
    if as_json:
        emit_json(
            {
                "content_id": entry.content_id,
                "bytes": stream_ciphertext_bytes(entry.size_bytes),
                "url": url,
                "header": header,
                "request": request.encode().hex(),
                "receipt_committed": receipt,
            }
        )
        return
    if receipt:
        console.print("read receipt: committed")
    console.print(f"GET {url}", highlight=False, soft_wrap=True)
    console.print(f"{header}: {request.encode().hex()}", highlight=False, soft_wrap=True)
    console.print(
        "Accept: application/vnd.ipld.car (the whole blob) or application/vnd.ipld.raw "
        "(one block); the payload is ciphertext only this key decrypts",
        highlight=False,
    )


def _home_store(home: Path) -> BlobStore:
    """The blob store of a node's home, opened directly (the node may run meanwhile: every
    object is written whole, under a name that is its content id)."""
    return open_blob_store(load_node_config(home).blobs, home)


# a node home whose blob store is opened directly (export and import need no running node)
store_home_option = click.option(
    "--home", required=True, envvar=HOME_ENVIRONMENT_VARIABLE, show_envvar=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The node home whose blob store the blob is read from or written to.",
)  # fmt: skip


@blob.command("export")
@store_home_option
@click.option("--car", "car_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("cid")
@json_option
def blob_export(home: Path, car_path: Path, cid: str, as_json: bool) -> None:
    """Write a blob and its whole tree as a CAR file (what `ipfs dag import` and CAR readers
    take); every block is checked on the way out. Never overwrites a file."""
    if car_path.exists():
        raise InvalidInput(f"{car_path} exists already", hint="choose another --car path")

    async def export() -> int:
        store = _home_store(home)
        written = 0
        try:
            partial = car_path.with_name(car_path.name + ".partial")
            with partial.open("wb") as out:
                async for piece in write_car(parse_cid(cid), store.blocks(cid)):
                    out.write(piece)
                    written += len(piece)
            partial.replace(car_path)
        finally:
            await store.close()
        return written

    try:
        written = asyncio.run(export())
    finally:
        car_path.with_name(car_path.name + ".partial").unlink(missing_ok=True)
    if as_json:
        emit_json({"content_id": cid, "car": str(car_path), "bytes": written})
    else:
        console.print(f"wrote {cid} to {car_path} ({written:,} bytes)")


@blob.command("import")
@store_home_option
@click.argument("car_path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def blob_import(home: Path, car_path: Path, as_json: bool) -> None:
    """Store the blob a CAR file holds (from carechain or any IPFS tool): only if its blocks
    are exactly that blob, each matching its id; print its content id."""
    root, blocks = read_car(car_path.read_bytes())

    async def store_all() -> None:
        store = _home_store(home)
        try:
            await store.put_blocks(root.text, blocks)
        finally:
            await store.close()

    asyncio.run(store_all())
    if as_json:
        emit_json({"content_id": root.text, "blocks": len(blocks)})
    else:
        console.print(root.text)

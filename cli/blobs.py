"""`carechain blob`: put an encrypted file in a node's blob store, get one, check a file
against its content id."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from carechain.cli.context import (
    flow_options,
    make_context,
)
from carechain.cli.output import EXIT_FAILED, console, emit_json, error_console, json_option
from carechain.storage.blobs.store import content_id_of


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

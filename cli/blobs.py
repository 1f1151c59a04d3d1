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
from carechain.cli.output import EXIT_FAILED, console, error_console
from carechain.storage.blobs.store import content_id_of


@click.group()
def blob() -> None:
    """The node's blob store (ciphertext only)."""


@blob.command("put")
@flow_options
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def blob_put(home: Path, api: str | None, passphrase_file: Path | None, path: Path) -> None:
    """Store a file's bytes (already encrypted); print its content id."""
    context = make_context(home, api, passphrase_file)
    console.print(context.client.blob_put(path.read_bytes()))


@blob.command("get")
@flow_options
@click.argument("cid")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def blob_get(
    home: Path, api: str | None, passphrase_file: Path | None, cid: str, out: Path
) -> None:
    """Read a blob held by this node (each chunk verified against its content id)."""
    context = make_context(home, api, passphrase_file)
    data = context.client.request("GET", f"/v1/blobs/{cid}")
    out.write_bytes(data)
    console.print(f"wrote {len(data):,} bytes to {out}")


@blob.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("cid")
def blob_verify(path: Path, cid: str) -> None:
    """Check that a file is the blob a content id names (no node needed)."""
    actual = content_id_of(path.read_bytes())
    if actual != cid:  # a check that failed, not a bad input: exit 1
        error_console.print(f"[red]mismatch:[/red] {path} is {actual}, not {cid}")
        sys.exit(EXIT_FAILED)
    console.print(f"{path} matches {cid}")

"""The demo's step for content ids IPFS agrees with: the CGM report's id is the one IPFS
gives its bytes, and hospital A's node serves it to IPFS tools as a CAR through the trustless
gateway route, to a reader the ledger allows and no one else."""

from __future__ import annotations

import asyncio

from carechain.cli.demo.steps import Story, _receipt
from carechain.consensus import crypto
from carechain.consensus.cid import RAW, ContentId
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.consensus.ledger.records import RecordEntry
from carechain.consensus.ledger.state import Table
from carechain.node.wallet.client import ApiRequestError
from carechain.storage.blobs.backends import MemoryObjects
from carechain.storage.blobs.car import read_car
from carechain.storage.blobs.store import BlobStore

CAR = "application/vnd.ipld.car"
RAW_BLOCK = "application/vnd.ipld.raw"


def gateway(story: Story) -> None:
    story.step("Hospital A's node serves the CGM report to IPFS tools: a CAR, to readers only")
    ledger, vault_id, a, node_a = (
        story.ledger,
        story.vaults["cgm"],
        story.hospital["A"],
        story.clients["A"],
    )
    record_id, content_id, plaintext = story.cgm
    story.check(
        content_id.startswith("bafybei"),
        f"its content id {content_id[:20]}... is the root of a UnixFS tree of 1 MiB raw "
        "leaves: the id `ipfs add --cid-version 1` gives the same bytes (profile "
        "unixfs-v1-2025)",
    )
    try:
        node_a.gateway(content_id, None, CAR)
        story.check(False, "an unsigned request for the blob is refused")
    except ApiRequestError as exc:
        story.check(exc.status == 403, f"an unsigned request is refused: {exc.code}")
    stranger = story.hospital["B"]  # no grant on the cgm vault
    asked = BlobRequest(
        story.chain_id, stranger.public_key, vault_id, record_id, content_id, ledger.time_ms()
    ).signed_by(stranger)
    try:
        node_a.gateway(content_id, asked.encode(), CAR)
        story.check(False, "hospital B, without a grant, is refused")
    except ApiRequestError as exc:
        story.check(exc.status == 403, f"hospital B, with no grant on it, is refused: {exc.code}")
    request = BlobRequest(
        story.chain_id, a.public_key, vault_id, record_id, content_id, ledger.time_ms()
    ).signed_by(a)
    car = node_a.gateway(content_id, request.encode(), CAR)
    root, blocks = read_car(car)
    ciphertext = asyncio.run(_verified(root.text, blocks))
    story.check(
        root.text == content_id,
        f"the team hospital's signed request gets a CAR of {len(blocks)} blocks "
        f"({len(car):,} bytes); each matches its id and the tree's sizes add up",
    )
    leaf = next(cid for cid in blocks if cid.codec == RAW)
    block = node_a.gateway(leaf.text, request.encode(), RAW_BLOCK)
    story.check(
        block == blocks[leaf] and leaf.matches(block),
        f"one block alone, as {RAW_BLOCK}: a leaf of the report, matching its id",
    )
    try:
        node_a.gateway(content_id, request.encode(), "text/html")
        story.check(False, "a format the gateway does not serve is refused")
    except ApiRequestError as exc:
        story.check(exc.status == 406, f"a web page is not what it serves: {exc.status}")
    entry = ledger.state().load(Table.RECORD, vault_id + record_id, RecordEntry)
    assert entry is not None
    epoch_key = crypto.unseal(ledger.sealed_epoch_key(vault_id, 1, a.public_key) or b"", a)
    data_key = crypto.decrypt_small(epoch_key, entry.sealed_data_key)
    story.check(
        b"".join(crypto.decrypt_stream(data_key, [ciphertext])) == plaintext,
        "it decrypts to the report; the payload was ciphertext all the way",
    )
    receipt = _receipt(story, "A", vault_id, record_id)
    node_a.submit(receipt)
    node_a.wait_committed(receipt.id)
    story.check(True, "hospital A files its read receipt on chain, as after any fetch")


async def _verified(root: str, blocks: dict[ContentId, bytes]) -> bytes:
    """The blob the blocks hold, each checked: what any IPFS client does with a CAR."""
    store = BlobStore(MemoryObjects())
    await store.put_blocks(root, blocks)
    return await store.read(root)

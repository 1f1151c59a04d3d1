"""Who may read a record's blob: the signed request a reader sends another hospital's node,
and the check that node makes against committed chain state before sending a byte.

A reader signs a `BlobRequest` (Purpose.BLOB_REQUEST). It may read the record if the
signature verifies, the record exists with that content id and was not erased, and the reader
may read it now: the patient, a team hospital, a trusted party, or an active grant whose
record window covers the record.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Final

from carechain.consensus.codec import Record, Size
from carechain.consensus.crypto import PrivateKey, Purpose, verify
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.context import acting_keys, grants_of, readers_by_right
from carechain.consensus.ledger.records import RecordEntry, Vault
from carechain.consensus.ledger.state import Overlay, StateReader, Table
from carechain.consensus.types import AccountId, ChainId, PublicKey

# The HTTP header that carries a signed BlobRequest (hex) to a node's IPFS gateway route.
REQUEST_HEADER: Final = "X-Carechain-Blob-Request"


class BlobAccessDenied(InvalidInput):
    code = "not_authorised"


@dataclasses.dataclass(frozen=True, slots=True)
class BlobRequest(Record):
    chain_id: ChainId
    reader: PublicKey
    vault: AccountId
    record_id: Annotated[bytes, Size(16, 16)]
    content_id: Annotated[str, Size(1, 128)]
    time_ms: int
    signature: Annotated[bytes, Size(0, 64)] = b""

    def payload_hash(self) -> bytes:
        return dataclasses.replace(self, signature=b"").hash()

    def signed_by(self, key: PrivateKey) -> BlobRequest:
        signature = key.sign(Purpose.BLOB_REQUEST, self.chain_id, self.payload_hash())
        return dataclasses.replace(self, signature=signature)


def authorise(state: StateReader, chain_id: str, request: BlobRequest, now_ms: int) -> RecordEntry:
    """The record a valid request may read, or BlobAccessDenied saying why not."""
    if request.chain_id != chain_id or not verify(
        request.reader, Purpose.BLOB_REQUEST, chain_id, request.payload_hash(), request.signature
    ):
        raise BlobAccessDenied("the blob request's signature does not verify")
    view = Overlay(state)
    vault = view.load(Table.VAULT, request.vault, Vault)
    entry = view.load(Table.RECORD, request.vault + request.record_id, RecordEntry)
    if vault is None or entry is None or entry.content_id != request.content_id:
        raise BlobAccessDenied("no such record with that content id on chain")
    if entry.erased_height is not None:
        raise BlobAccessDenied("the record was erased; it is not served")
    acting = acting_keys(view, frozenset({request.reader}))
    if not acting:
        raise BlobAccessDenied(
            "the reader's key is an institution's governance revoked, or one it rotated away from"
        )
    (reader,) = acting  # an institution's key now reads as the institution
    if reader in readers_by_right(view, vault):
        return entry
    for grant in grants_of(view, request.vault, reader):
        if grant.active_at(now_ms) and grant.covers_record_time(entry.record_time_ms):
            return entry
    raise BlobAccessDenied("the reader holds no active grant covering this record")

"""What a patient's keys do, shared by the command line (`carechain grant ...`, `record get`)
and the patient's local agent behind the web console: grant and revoke access (with the epoch
rotation a revocation requires) and read a record. Everything is signed and decrypted here,
on the patient's side; a node only ever sees signed transactions and ciphertext."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from carechain.consensus import crypto
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.consensus.ledger.context import epoch_key_key, grants_of, required_members
from carechain.consensus.ledger.records import Access, Grant, RecordEntry
from carechain.consensus.ledger.state import Table as StateTable
from carechain.consensus.types import Tx, TxSignature
from carechain.node.wallet import builders
from carechain.node.wallet.context import DAY_MS, FlowContext, institution_kind
from carechain.storage.blobs.store import content_id_of


def grant_access(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    vault_id: bytes,
    grantee: bytes,
    *,
    days: int,
    purpose: str,
    write: bool = False,
) -> Tx:
    """A grant of `vault_id` to `grantee` from now for `days`, signed by `keys`."""
    vault_state = context.vault(vault_id)
    now = context.now_ms()
    draft = builders.grant(
        context.chain_id,
        vault_state.vault_id,
        context.nonce(vault_state.vault_id),
        context.expiry(),
        grantee=grantee,
        epoch_key=context.epoch_key(vault_state, keys[0]),
        valid_from_ms=now - 1000,
        valid_until_ms=now + days * DAY_MS,
        purpose=purpose,
        access=Access.READ_WRITE if write else Access.READ,
        sealing_key=context.sealing_keys([grantee])[grantee],
    )
    return draft.signed(*keys)


def revoke_grant(
    context: FlowContext, keys: list[crypto.PrivateKey], vault_id: bytes, grant_id: bytes
) -> Tx:
    """The revocation of `grant_id`, rotating the vault's epoch to the remaining readers (the
    grantee stays one only if another active grant of the vault names it)."""
    vault_state = context.vault(vault_id)
    state = context.next_state()  # the members the next block requires
    revoked = state.load(StateTable.GRANT, grant_id, Grant)
    if revoked is None or revoked.vault != vault_id:
        raise InvalidInput(f"no grant {grant_id.hex()} on vault {vault_id.hex()}")
    remaining = set(required_members(state, vault_state, context.now_ms()))
    if not any(
        g.active_at(context.now_ms()) and g.grant_id != grant_id
        for g in grants_of(state, vault_state.vault_id, revoked.grantee)
    ):
        remaining.discard(revoked.grantee)
    draft, _ = builders.revoke(
        context.chain_id,
        vault_state.vault_id,
        context.nonce(vault_state.vault_id),
        context.expiry(),
        grant_id=grant_id,
        new_epoch=vault_state.epoch + 1,
        remaining_members=context.sealing_keys(remaining),
    )
    return draft.signed(*keys)


def rotate_vault_epoch(context: FlowContext, keys: list[crypto.PrivateKey], vault_id: bytes) -> Tx:
    """The vault's next epoch, its key sealed to exactly who must read it now (a revoked
    institution and a grantee whose grant ended left out), signed by `keys`: with one patient
    key it waits as a partial for the other (the admin policy)."""
    vault_state = context.vault(vault_id)
    members = required_members(context.next_state(), vault_state, context.now_ms())
    draft, _ = builders.rotate_epoch(
        context.chain_id, vault_id, context.nonce(vault_id), context.expiry(),
        new_epoch=vault_state.epoch + 1, members=context.sealing_keys(members),
    )  # fmt: skip
    return draft.signed(*keys)


def read_record(
    context: FlowContext,
    reader: crypto.PrivateKey,
    vault_id: bytes,
    record_id: bytes,
    *,
    grant_id: bytes = b"",
) -> bytes:
    """Fetch a record (inline, or its blob through the node with a signed request), check it
    against its content id and decrypt it with the epoch key sealed to `reader`.

    An institution's read is anchored before anything is decrypted: its `access.receipt`
    (under `grant_id`, or none for a team hospital, a trusted party or an emergency named
    by its request id) must commit first. If the ledger refuses it, the refusal is raised and
    no plaintext ever exists on this side. A patient reading their own record files none."""
    entry = _record(context, vault_id, record_id)
    data_key = _data_key(context, reader, vault_id, entry)
    if entry.content_id == "inline":
        _anchor_read(context, reader, vault_id, record_id, grant_id)
        return crypto.decrypt_small(data_key, entry.inline_ciphertext)
    request = BlobRequest(
        context.chain_id,
        reader.public_key,
        vault_id,
        record_id,
        entry.content_id,
        context.now_ms(),
    )
    ciphertext = context.client.blob_fetch(request.signed_by(reader).encode())
    _check_blob(entry, ciphertext)
    _anchor_read(context, reader, vault_id, record_id, grant_id)
    return b"".join(crypto.decrypt_stream(data_key, [ciphertext]))


def decrypt_blob(
    context: FlowContext,
    reader: crypto.PrivateKey,
    vault_id: bytes,
    record_id: bytes,
    ciphertext: bytes,
) -> bytes:
    """A record's blob fetched by other means (IPFS tools through the gateway, after
    `gateway_request` anchored the read), checked against the record and decrypted."""
    entry = _record(context, vault_id, record_id)
    data_key = _data_key(context, reader, vault_id, entry)
    _check_blob(entry, ciphertext)
    return b"".join(crypto.decrypt_stream(data_key, [ciphertext]))


def _record(context: FlowContext, vault_id: bytes, record_id: bytes) -> RecordEntry:
    entry = context.state().load(StateTable.RECORD, vault_id + record_id, RecordEntry)
    if entry is None:
        raise InvalidInput(f"no record {record_id.hex()} in vault {vault_id.hex()}")
    return entry


def _data_key(
    context: FlowContext, reader: crypto.PrivateKey, vault_id: bytes, entry: RecordEntry
) -> bytes:
    """The record's data key, through the epoch key the ledger sealed to `reader` (for an
    institution's key, to the institution)."""
    member = context.institution_of(reader.public_key)
    sealed = context.state().get(StateTable.EPOCH_KEY, epoch_key_key(vault_id, entry.epoch, member))
    if sealed is None:
        raise InvalidInput("this key holds no key for the record's epoch: no access")
    return crypto.decrypt_small(crypto.unseal(sealed, reader), entry.sealed_data_key)


def _check_blob(entry: RecordEntry, ciphertext: bytes) -> None:
    """The blob is exactly the record's: the ciphertext of its size, under its content id."""
    if len(ciphertext) != crypto.stream_ciphertext_bytes(entry.size_bytes):
        raise InvalidInput(
            f"the fetched blob holds {len(ciphertext)} bytes; the record's ciphertext has "
            f"{crypto.stream_ciphertext_bytes(entry.size_bytes)}"
        )
    if content_id_of(ciphertext) != entry.content_id:
        raise InvalidInput("the fetched blob does not match the record's content id")


def gateway_request(
    context: FlowContext,
    reader: crypto.PrivateKey,
    vault_id: bytes,
    record_id: bytes,
    *,
    grant_id: bytes = b"",
) -> tuple[RecordEntry, BlobRequest]:
    """The record and a request for its blob signed by `reader`, for IPFS tools: the header
    `X-Carechain-Blob-Request` of the gateway route `GET /ipfs/{cid}`. What it fetches is
    ciphertext, but `reader` holds the key to it, so an institution's read receipt commits
    first, as for `read_record`: a read through IPFS tools is on chain like any other."""
    entry = _record(context, vault_id, record_id)
    if entry.content_id == "inline":
        raise InvalidInput(
            f"record {record_id.hex()} is stored inline on chain: it has no blob",
            hint="read it with `carechain record get`",
        )
    _anchor_read(context, reader, vault_id, record_id, grant_id)
    request = BlobRequest(
        context.chain_id, reader.public_key, vault_id, record_id, entry.content_id,
        context.now_ms(),
    )  # fmt: skip
    return entry, request.signed_by(reader)


def _anchor_read(
    context: FlowContext,
    reader: crypto.PrivateKey,
    vault_id: bytes,
    record_id: bytes,
    grant_id: bytes,
) -> dict[str, object] | None:
    """An institution's read receipt, committed (the answer), or None for a patient's read."""
    if institution_kind(context, reader.public_key) is None:
        return None
    institution = context.institution_of(reader.public_key)
    receipt = builders.receipt(
        context.chain_id,
        institution,
        context.nonce(crypto.account_id(institution)),
        context.expiry(),
        vault=vault_id,
        record_id=record_id,
        grant_id=grant_id,
    )
    signed = receipt.signed(reader)
    answer = context.send(signed)
    if answer.get("status") != "committed":  # a receipt that waits for co-signatures: no read
        raise InvalidInput(
            f"the read receipt {signed.id.hex()} is {answer.get('status')}, not committed: "
            "nothing was decrypted"
        )
    return answer


def save_private(path: Path, data: bytes) -> None:
    """Write plaintext as a whole file readable by its owner only (0600 from its creation) or
    leave nothing: a temporary file of a random name beside it, fsynced, renamed over `path`,
    and the folder fsynced so the rename survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)  # mkstemp creates it 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def cosignature(key: crypto.PrivateKey, tx: Tx) -> TxSignature:
    return TxSignature(key.public_key, key.sign(crypto.Purpose.TX, tx.chain_id, tx.id))

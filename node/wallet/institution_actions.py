"""An institution's planned key rotation from its side (`carechain institution rotate-key`,
`institution reseal`): rotate to a new key, signed by the key now and the new one, then reseal
every epoch key copy the institution holds to the new key, in batches, each signed by the new
key. The ledger's rules are in `consensus/ledger/institutions.py`.

A reseal that stops half way (a network error, a closed laptop) is resumed by running it again:
a copy that opens with the new key already is left out."""

from __future__ import annotations

import struct
from typing import Final

from carechain.consensus import crypto
from carechain.consensus.errors import DecodeError, InvalidInput
from carechain.consensus.ledger.bodies import ResealedKey
from carechain.consensus.ledger.records import InstitutionState
from carechain.consensus.ledger.state import Table
from carechain.consensus.types import Tx
from carechain.node.audit.access_report import TableReader
from carechain.node.wallet import builders
from carechain.node.wallet.client import RemoteState
from carechain.node.wallet.context import FlowContext

# Copies per reseal transaction: about 130 bytes each, well inside the default 300 KiB.
RESEAL_BATCH: Final = 1000


def institution_state(context: FlowContext, key: bytes) -> InstitutionState:
    """The institution `key` signs for now, or a clear refusal."""
    first = context.institution_of(key)
    found = context.state().load(Table.INSTITUTION, first, InstitutionState)
    if found is None or not found.active:
        raise InvalidInput(
            f"{key.hex()[:16]} is not an active institution's key",
            code="unknown_institution",
            hint="give the key the institution signs with now (`carechain institution list`)",
        )
    return found


def rotate_key(context: FlowContext, current: crypto.PrivateKey, new: crypto.PrivateKey) -> Tx:
    found = institution_state(context, current.public_key)  # refuses a retired key
    account = crypto.account_id(found.institution.public_key)
    draft = builders.rotate_institution_key(
        context.chain_id, account, context.nonce(account), context.expiry(), new.public_key
    )
    return draft.signed(current, new)


def copies_to_reseal(
    reader: TableReader, first: bytes, old: crypto.PrivateKey, new: crypto.PrivateKey
) -> tuple[list[ResealedKey], int]:
    """Each epoch key copy of the institution named by `first` still sealed to `old`, sealed
    to `new` instead, and how many copies open with neither key (sealed to a key older
    still). Every vault's copies are read through `reader` (a node's state API)."""
    resealed, unopened = [], 0
    for vault_id, _ in reader.table_entries(Table.VAULT):
        for key, sealed in reader.table_entries(Table.EPOCH_KEY, vault_id):
            if key[28:] != first:
                continue
            epoch_key = _open(sealed, old, new)
            if epoch_key is None:
                unopened += 1
            elif epoch_key:
                (epoch,) = struct.unpack(">Q", key[20:28])
                sealed_again = crypto.seal(epoch_key, new.public_key)
                resealed.append(ResealedKey(vault_id, epoch, sealed_again))
    return resealed, unopened


def _open(sealed: bytes, old: crypto.PrivateKey, new: crypto.PrivateKey) -> bytes | None:
    """The epoch key if the copy opens with `old`; b"" if it opens with `new` already (nothing
    to do); None if with neither."""
    for key, found in ((new, False), (old, True)):
        try:
            opened = crypto.unseal(sealed, key)
        except DecodeError:
            continue
        return opened if found else b""
    return None


def reseal(
    context: FlowContext,
    old: crypto.PrivateKey,
    new: crypto.PrivateKey,
    batch: int = RESEAL_BATCH,
) -> dict[str, object]:
    """Reseal every copy still sealed to `old`, `batch` per transaction, each committed before
    the next is sent: how many were resealed, in how many transactions, and how many open with
    neither key."""
    first = institution_state(context, new.public_key).institution.public_key
    copies, unopened = copies_to_reseal(RemoteState(context.client), first, old, new)
    account = crypto.account_id(first)
    transactions = []
    for start in range(0, len(copies), batch):
        draft = builders.reseal(
            context.chain_id, account, context.nonce(account), context.expiry(),
            copies[start : start + batch],
        )  # fmt: skip
        tx = draft.signed(new)
        context.send(tx)
        transactions.append(tx.id.hex())
    return {"resealed": len(copies), "transactions": transactions, "unopened": unopened}

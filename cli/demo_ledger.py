"""The paper's scenario on the ledger: vaults, co-signed reports, grants, receipts, revocation,
emergency access, the patient's timeline, and a replay that reproduces every state root.

Blocks are committed by a single-process chain (`node.local_chain`) until the validator network
runs the same ledger; every check here is against committed state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path

from rich.table import Table as RichTable

from carechain.cli.output import console
from carechain.consensus import crypto
from carechain.consensus.errors import DecodeError
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.context import ChainContext, epoch_key_key
from carechain.consensus.ledger.records import (
    Account,
    Emergency,
    Grant,
    Receipt,
    RecordEntry,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx
from carechain.node import builders
from carechain.node.agent_rules import Rule
from carechain.node.local_chain import LocalChain
from carechain.storage.blobs.backends import FsObjects
from carechain.storage.blobs.store import BlobStore, from_bytes
from carechain.storage.kv import LevelKV, MemoryKV
from carechain.storage.state import StateStore

DAY_MS = builders.DAY_MS


@dataclasses.dataclass
class Ledger:
    """The demo's chain, its blob store and the keys the patient's side keeps."""

    chain: LocalChain
    blobs: BlobStore
    epoch_keys: dict[tuple[bytes, int], bytes] = dataclasses.field(default_factory=dict)
    record_ids: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def state(self) -> Overlay:
        return Overlay(self.chain.store)

    def nonce(self, account: bytes) -> int:
        found = self.state().load(Table.ACCOUNT, account, Account)
        return 1 if found is None else found.nonce + 1

    def expiry(self) -> int:
        return self.chain.time_ms + DAY_MS

    def vault(self, vault_id: bytes) -> Vault:
        found = self.state().load(Table.VAULT, vault_id, Vault)
        assert found is not None, "the demo's vault is missing"
        return found

    def sealed_epoch_key(self, vault_id: bytes, epoch: int, member: bytes) -> bytes | None:
        return self.state().get(Table.EPOCH_KEY, epoch_key_key(vault_id, epoch, member))


def open_ledger(folder: Path, genesis: Genesis, proposer: bytes) -> Ledger:
    chain = LocalChain(LevelKV(folder / "state"), genesis, proposer)
    return Ledger(chain, BlobStore(FsObjects(folder / "blobs")))


def store_blob(ledger: Ledger, ciphertext: bytes) -> str:
    return asyncio.run(ledger.blobs.put(from_bytes(ciphertext)))


def fetch_blob(ledger: Ledger, content_id: str) -> bytes:
    """Read a blob back; every chunk is checked against its content id on the way."""
    return asyncio.run(ledger.blobs.read(content_id))


def reading(kind: str, index: int) -> bytes:
    if kind == "glucose":
        return f"glucose {5.2 + index * 0.3:.1f} mmol/L (home meter)".encode()
    return f"blood pressure {118 + index}/{76 + index} mmHg (home cuff)".encode()


def put_reading(ledger: Ledger, vault_id: bytes, plaintext: bytes) -> tuple[Tx, bytes]:
    vault = ledger.vault(vault_id)
    encrypted = builders.encrypt_record(
        plaintext,
        record_id=next(ledger.record_ids).to_bytes(16, "big"),
        data_type=vault.data_type,
        epoch=vault.epoch,
        epoch_key=ledger.epoch_keys[(vault_id, vault.epoch)],
        record_time_ms=ledger.chain.time_ms,
    )
    draft = builders.TxDraft(
        ledger.chain.chain.chain_id,
        "record.put",
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        encrypted.body,
    )
    return draft.unsigned(), encrypted.body.record_id


def read_inline(
    ledger: Ledger, vault_id: bytes, record_id: bytes, reader: crypto.PrivateKey
) -> bytes:
    entry = ledger.state().load(Table.RECORD, vault_id + record_id, RecordEntry)
    assert entry is not None
    sealed = ledger.sealed_epoch_key(vault_id, entry.epoch, reader.public_key)
    if sealed is None:
        raise DecodeError("no epoch key is sealed to this reader", code="not_a_recipient")
    return builders.open_inline_record(
        entry.inline_ciphertext, entry.sealed_data_key, sealed, reader
    )


Event = tuple[int, str, str]


def _grant_event(value: bytes, vaults: dict[bytes, str], names: dict[bytes, str]) -> Event | None:
    grant = Grant.decode(value)
    if grant.vault not in vaults or grant.emergency_id:
        return None
    revoked = "" if grant.revoked_height is None else f", revoked at {grant.revoked_height}"
    text = f"{names[grant.grantee]} may read {vaults[grant.vault]} for {grant.purpose}{revoked}"
    return grant.granted_height, "grant", text


def _read_event(value: bytes, vaults: dict[bytes, str], names: dict[bytes, str]) -> Event | None:
    receipt = Receipt.decode(value)
    if receipt.vault not in vaults:
        return None
    return receipt.height, "read", f"{names[receipt.reader]} read a {vaults[receipt.vault]} record"


def _emergency_event(
    value: bytes, vaults: dict[bytes, str], names: dict[bytes, str]
) -> Event | None:
    emergency = Emergency.decode(value)
    if emergency.vault not in vaults:
        return None
    text = (
        f"{names[emergency.hospital]} opened {vaults[emergency.vault]} ({emergency.reason}), "
        f"{emergency.status.name.lower()}"
    )
    return emergency.opened_height, "emergency", text


_DESCRIBE = {
    Table.GRANT: _grant_event,
    Table.RECEIPT: _read_event,
    Table.EMERGENCY: _emergency_event,
}


def timeline(ledger: Ledger, vaults: dict[bytes, str], names: dict[bytes, str]) -> list[Event]:
    """The patient's access events from committed state, in block order."""
    events = []
    for table, _, value in ledger.chain.store.entries():
        describe = _DESCRIBE.get(table)
        event = describe(value, vaults, names) if describe else None
        if event is not None:
            events.append(event)
    return sorted(events)


def replay_roots(ledger: Ledger, genesis: Genesis) -> tuple[int, list[int]]:
    """Re-execute every block on a fresh store; heights whose root differs from the header's."""
    store = StateStore(MemoryKV())
    store.initialize(genesis)
    chain = ChainContext.from_genesis(genesis)
    mismatches = []
    for block in ledger.chain.blocks:
        root = store.apply(apply_block(store, block, chain), block.header.height)
        if root != block.header.state_root:
            mismatches.append(block.header.height)
    return len(ledger.chain.blocks), mismatches


def print_timeline(events: list[Event]) -> None:
    table = RichTable("height", "event", "what happened")
    for height, kind, text in events:
        table.add_row(str(height), kind, text)
    console.print(table)


AGENT_RULES = "hospital A may file CGM and glucose reports up to 10 MB"


def agent_rules(hospital_a: bytes) -> list[Rule]:
    return [
        Rule(
            name=AGENT_RULES,
            institutions=[hospital_a.hex()],
            kinds=["record.put"],
            data_types=["cgm", "glucose"],
            max_size_bytes=10 * 1024 * 1024,
        )
    ]

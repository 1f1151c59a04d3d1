"""The paper's scenario against a running network: the demo's view of the chain through the
nodes' HTTP APIs, the patient's readings, the access timeline, and an auditor's replay.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from rich.table import Table as RichTable

from carechain.cli.output import console
from carechain.consensus import crypto
from carechain.consensus.errors import DecodeError
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import TxStatus
from carechain.consensus.ledger.context import epoch_key_key
from carechain.consensus.ledger.records import (
    Account,
    RecordEntry,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.types import Block, CommitCertificate, Tx
from carechain.node.audit.access_report import AccessEvent
from carechain.node.audit.replay import AuditFailure
from carechain.node.audit.replay import replay as audit_replay
from carechain.node.wallet import builders
from carechain.node.wallet.agent_rules import Rule
from carechain.node.wallet.client import ApiChain, Client, RemoteState

DAY_MS = builders.DAY_MS


@dataclasses.dataclass
class Ledger:
    """The demo's view of the running network, through the nodes' HTTP APIs, and the keys
    the patient's side keeps. `client` is the node the current actor talks to."""

    genesis: Genesis
    client: Client
    epoch_keys: dict[tuple[bytes, int], bytes] = dataclasses.field(default_factory=dict)
    record_ids: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def state(self) -> Overlay:
        return Overlay(RemoteState(self.client))

    def entries(self, table: Table) -> list[tuple[bytes, bytes]]:
        return RemoteState(self.client).table_entries(table)

    def time_ms(self) -> int:
        return max(int(time.time() * 1000), int(self.client.status()["last_block_time_ms"]) + 1)

    def commit(self, tx: Tx) -> int:
        """Submit and wait until committed; the height. TxRejected-like errors propagate."""
        self.client.submit(tx)
        return int(self.client.wait_committed(tx.id)["height"])

    def check(self, tx: Tx) -> TxStatus:
        return TxStatus(self.client.check(tx)["status"])

    def nonce(self, account: bytes) -> int:
        found = self.state().load(Table.ACCOUNT, account, Account)
        return 1 if found is None else found.nonce + 1

    def expiry(self) -> int:
        return self.time_ms() + DAY_MS

    def vault(self, vault_id: bytes) -> Vault:
        found = self.state().load(Table.VAULT, vault_id, Vault)
        assert found is not None, "the demo's vault is missing"
        return found

    def sealed_epoch_key(self, vault_id: bytes, epoch: int, member: bytes) -> bytes | None:
        return self.state().get(Table.EPOCH_KEY, epoch_key_key(vault_id, epoch, member))

    def blocks(self) -> list[tuple[Block, CommitCertificate]]:
        height = int(self.client.status()["height"])
        found = []
        for number in range(1, height + 1):
            answer = self.client.get(f"/v1/blocks/{number}")
            found.append(
                (
                    Block.decode(
                        bytes.fromhex(answer["block"]), max_bytes=LIMITS_AT_CAP.block_bytes
                    ),
                    CommitCertificate.decode(bytes.fromhex(answer["certificate"])),
                )
            )
        return found


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
        record_time_ms=ledger.time_ms(),
    )
    draft = builders.TxDraft(
        ledger.chain_id,
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


def print_timeline(events: list[AccessEvent], names: dict[bytes, str]) -> None:
    table = RichTable("height", "event", "who", "data", "what happened")
    for event in events:
        detail = event.detail
        if event.kind == "grant":
            revoked = detail["revoked_height"]
            what = f"{detail['purpose']}" + (f", revoked at {revoked}" if revoked else "")
        elif event.kind == "emergency":
            what = f"{detail['reason']}, {detail['status']}"
        else:
            what = ""
        who = names.get(event.actor, event.actor.hex()[:12] or "patient")
        table.add_row(str(event.height), event.kind, who, event.data_type, what)
    console.print(table)


def replay(ledger: Ledger) -> tuple[int, list[str]]:
    """An auditor's replay of the whole chain through a node's API (see node.audit.replay)."""
    try:
        report = audit_replay(ApiChain(ledger.client), ledger.genesis, workers=1)
    except AuditFailure as failure:
        return failure.height, [str(failure)]
    return report.blocks, []


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

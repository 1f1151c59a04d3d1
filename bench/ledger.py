"""Ledger throughput: transactions applied (and committed to the in-memory store) per second
for a realistic mix (80% co-signed
`record.put` with an inline reading, 10% grants, 10% read receipts), with signature checks
excluded (signers verified beforehand, as a node's verification pool does) and included,
and applied plus committed to LevelDB, beside the Ed25519 verify rate of the same run.

Run: .venv/bin/python bench/ledger.py [--patients 200] [--rounds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import rate, report

from carechain.consensus import crypto
from carechain.consensus.genesis import ConsensusParams, Genesis, Institution, InstitutionKind
from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import ZERO_HASH, Block, BlockHeader, Tx, Validator, ValidatorSet
from carechain.node.wallet import builders
from carechain.storage.kv import KV, LevelKV, MemoryKV
from carechain.storage.state import StateStore

CHAIN = "carechain-bench"
START_MS = 1_790_000_000_000
BLOCK_TXS = 500


class Setup:
    """Patients with a glucose vault each, three institutions, and a workload of signed
    transactions for them (`chain` and `start_ms` let a live network use it)."""

    def __init__(self, patients: int, chain: str = CHAIN, start_ms: int = START_MS) -> None:
        self.chain_id = chain
        self.start_ms = start_ms
        self.hospital_a, self.hospital_b, self.trusted = (
            crypto.PrivateKey(bytes([i]) * 32) for i in (1, 2, 3)
        )
        self.institutions = (
            Institution("a", InstitutionKind.HOSPITAL, self.hospital_a.public_key),
            Institution("b", InstitutionKind.HOSPITAL, self.hospital_b.public_key),
            Institution("t", InstitutionKind.TRUSTED_PARTY, self.trusted.public_key),
        )
        validator = crypto.PrivateKey(b"\x09" * 32)
        self.genesis = Genesis(
            chain,
            start_ms,
            ValidatorSet.of([Validator("v0", validator.public_key, validator.public_key, 1)]),
            1,
            self.institutions,
            ConsensusParams(),
            (),
        )
        self.chain = ChainContext.from_genesis(self.genesis)
        self.patients = [
            (crypto.PrivateKey.generate(), crypto.PrivateKey.generate()) for _ in range(patients)
        ]
        self.epoch_keys: dict[bytes, bytes] = {}
        self.setup_blocks = self._setup_blocks()

    def expiry(self) -> int:
        return self.start_ms + 10 * builders.DAY_MS

    def _setup_blocks(self) -> list[list[Tx]]:
        registrations, vaults = [], []
        team = [self.hospital_a.public_key]
        for p1, p2 in self.patients:
            keys = (p1.public_key, p2.public_key)
            registrations.append(
                builders.register_patient(self.chain_id, keys, self.expiry()).signed(p1, p2)
            )
            draft, epoch_key = builders.create_vault(
                self.chain_id,
                crypto.account_id(p1.public_key),
                2,
                self.expiry(),
                data_type="glucose",
                template=Template.PATIENT_CONTROLLED,
                team=team,
                members={*keys, *team, self.trusted.public_key},
            )
            vaults.append(draft.signed(p1, p2))
            self.epoch_keys[crypto.account_id(p1.public_key)] = epoch_key
        return [registrations, vaults]

    def workload(self, rounds: int, *, receipts: bool = True) -> list[Tx]:
        """`rounds` transactions per patient: 80% co-signed record puts with an inline reading,
        10% grants, 10% record puts followed (with `receipts`) by the hospital's read receipt
        for the record just put."""
        return [tx for tx, _ in self.workload_with_partials(rounds, receipts=receipts)]

    def workload_with_partials(
        self, rounds: int, *, receipts: bool = True
    ) -> list[tuple[Tx, Tx | None]]:
        """As `workload`, each transaction with, for co-signed record puts, a copy signed by
        the hospital alone (a partial the patient's signature completes) or None."""
        txs: list[tuple[Tx, Tx | None]] = []
        vault_nonce = dict.fromkeys(self.epoch_keys, 1)
        reader_nonce = 1
        for round_index in range(rounds):
            for index, (p1, p2) in enumerate(self.patients):
                patient = crypto.account_id(p1.public_key)
                vault = vault_id_of(patient, "glucose")
                record_id = (round_index * 1_000_000 + index).to_bytes(16, "big")
                kind = (round_index + index) % 10
                if kind == 0:
                    draft = builders.grant(
                        self.chain_id,
                        vault,
                        vault_nonce[patient],
                        self.expiry(),
                        grantee=self.hospital_b.public_key,
                        epoch_key=self.epoch_keys[patient],
                        valid_from_ms=self.start_ms,
                        valid_until_ms=self.start_ms + 30 * builders.DAY_MS,
                    )
                    txs.append((draft.signed(p1, p2), None))
                    vault_nonce[patient] += 1
                    continue
                encrypted = builders.encrypt_record(
                    b"glucose 5.8 mmol/L fasting",
                    record_id=record_id,
                    data_type="glucose",
                    epoch=1,
                    epoch_key=self.epoch_keys[patient],
                    record_time_ms=self.start_ms,
                )
                put = builders.TxDraft(
                    self.chain_id,
                    "record.put",
                    vault,
                    vault_nonce[patient],
                    self.expiry(),
                    encrypted.body,
                )
                txs.append((put.signed(p1, self.hospital_a), put.signed(self.hospital_a)))
                vault_nonce[patient] += 1
                if kind == 5 and receipts:
                    receipt = builders.receipt(
                        self.chain_id,
                        self.hospital_a.public_key,
                        reader_nonce,
                        self.expiry(),
                        vault=vault,
                        record_id=record_id,
                    )
                    txs.append((receipt.signed(self.hospital_a), None))
                    reader_nonce += 1
        return txs


def blocks_of(txs: list[Tx], first_height: int) -> list[Block]:
    blocks: list[Block] = []
    for offset in range(0, len(txs), BLOCK_TXS):
        height = first_height + len(blocks)
        header = BlockHeader(
            CHAIN,
            height,
            0,
            START_MS + height * 1000,
            b"\x00" * 32,
            ZERO_HASH,
            ZERO_HASH,
            ZERO_HASH,
            ZERO_HASH,
            ZERO_HASH,
        )
        blocks.append(Block(header, tuple(txs[offset : offset + BLOCK_TXS])))
    return blocks


def prepared_store(setup: Setup, kv: KV) -> StateStore:
    store = StateStore(kv)
    store.initialize(setup.genesis)
    for block in blocks_of(setup.setup_blocks[0], 1) + blocks_of(setup.setup_blocks[1], 1000):
        store.apply(apply_block(store, block, setup.chain), store.height + 1)
    return store


def measure(setup: Setup, blocks: list[Block], *, verify: bool, kv: KV) -> float:
    """Apply and commit every block to `kv`; transactions per second."""
    store = prepared_store(setup, kv)
    signers = {
        tx.witness_hash: frozenset(s.public_key for s in tx.signatures)
        for b in blocks
        for tx in b.txs
    }
    options = {} if verify else {"check_signers": lambda tx: signers[tx.witness_hash]}
    count = 0
    started = time.perf_counter()
    for block in blocks:
        diff = apply_block(store, block, setup.chain, **options)
        store.apply(diff, store.height + 1)
        count += len(block.txs)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    arguments = parser.parse_args()
    setup = Setup(arguments.patients)
    txs = setup.workload(arguments.rounds)
    blocks = blocks_of(txs, 2000)
    key = crypto.PrivateKey(b"\x05" * 32)
    digest = crypto.sha256(b"x")
    signature = key.sign(crypto.Purpose.TX, CHAIN, digest)
    verify_rate = rate(
        lambda: crypto.verify(key.public_key, crypto.Purpose.TX, CHAIN, digest, signature)
    )
    excluded = measure(setup, blocks, verify=False, kv=MemoryKV())
    included = measure(setup, blocks, verify=True, kv=MemoryKV())
    with tempfile.TemporaryDirectory() as folder:
        level = LevelKV(Path(folder) / "db")
        committed = measure(setup, blocks, verify=False, kv=level)
        level.close()
    signatures_per_tx = sum(len(tx.signatures) for tx in txs) / len(txs)
    report(
        "ledger",
        {
            "transactions": len(txs),
            "signatures_per_tx": signatures_per_tx,
            "applied_per_s_signatures_excluded": excluded,
            "applied_per_s_signatures_included": included,
            "applied_and_committed_leveldb_per_s_signatures_excluded": committed,
            "ed25519_verify_per_s": verify_rate,
            "included_vs_verify_ceiling": included / (verify_rate / signatures_per_tx),
        },
    )


if __name__ == "__main__":
    main()

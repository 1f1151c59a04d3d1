"""A small deterministic world for ledger tests: a patient, hospitals A/B/C, a trusted party and
4 validators on a real state store, advanced one block at a time."""

from __future__ import annotations

import dataclasses
import itertools

from carechain.consensus import crypto
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import (
    ConsensusParams,
    Genesis,
    Institution,
    InstitutionKind,
)
from carechain.consensus.ledger.apply import apply_block, apply_tx
from carechain.consensus.ledger.context import BlockContext, ChainContext, readers_by_right
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import Account, InstitutionAction, Vault
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import ZERO_HASH, Block, BlockHeader, Tx, Validator, ValidatorSet
from carechain.node.wallet import builders
from carechain.storage.kv import KV, MemoryKV
from carechain.storage.state import StateStore
from carechain.tests.strategies import deterministic_key

CHAIN_ID = "carechain-test"
GENESIS_TIME_MS = 1_790_000_000_000
DAY_MS = 86_400_000


@dataclasses.dataclass
class World:
    kv: KV = dataclasses.field(default_factory=MemoryKV)
    params: ConsensusParams = dataclasses.field(default_factory=ConsensusParams)

    def __post_init__(self) -> None:
        self.p1, self.p2 = deterministic_key(1), deterministic_key(2)
        self.hospital = {name: deterministic_key(10 + i) for i, name in enumerate("ABC")}
        self.trusted = deterministic_key(20)
        self.validator_keys = [deterministic_key(30 + i) for i in range(4)]
        self.genesis = Genesis(
            chain_id=CHAIN_ID,
            genesis_time_ms=GENESIS_TIME_MS,
            validators=ValidatorSet.of(
                [
                    Validator(f"v{i}", k.public_key, k.public_key, 10)
                    for i, k in enumerate(self.validator_keys)
                ]
            ),
            governance_threshold=3,
            institutions=(
                *(
                    Institution(f"hospital-{n}", InstitutionKind.HOSPITAL, k.public_key)
                    for n, k in self.hospital.items()
                ),
                Institution("trusted", InstitutionKind.TRUSTED_PARTY, self.trusted.public_key),
            ),
            params=self.params,
            extra_data_types=(),
        )
        self.chain = ChainContext.from_genesis(self.genesis)
        self.store = StateStore(self.kv)
        self.store.initialize(self.genesis)
        self.height = 0
        self.time_ms = GENESIS_TIME_MS
        self.epoch_keys: dict[tuple[bytes, int], bytes] = {}
        self.blocks: list[Block] = []
        self._record_ids = itertools.count(1)

    # -- time and blocks ------------------------------------------------------------------
    @property
    def patient(self) -> bytes:
        return crypto.account_id(self.p1.public_key)

    @property
    def patient_keys(self) -> tuple[bytes, bytes]:
        return (self.p1.public_key, self.p2.public_key)

    def expiry(self) -> int:
        return self.time_ms + DAY_MS

    def next_context(self, advance_ms: int = 1000) -> BlockContext:
        return BlockContext(self.chain, self.height + 1, self.time_ms + advance_ms)

    def block(self, *txs: Tx, advance_ms: int = 1000) -> bytes:
        """Apply a block holding `txs`; returns the new state root."""
        context = self.next_context(advance_ms)
        header = BlockHeader(
            CHAIN_ID,
            context.height,
            0,
            context.time_ms,
            self.validator_keys[0].public_key,
            ZERO_HASH,
            ZERO_HASH,
            ZERO_HASH,
            ZERO_HASH,
            ZERO_HASH,
        )
        block = Block(header, txs)
        diff = apply_block(self.store, block, self.chain)
        root = self.store.apply(diff, context.height)
        self.blocks.append(block)
        self.height, self.time_ms = context.height, context.time_ms
        return root

    def reject(self, tx: Tx, advance_ms: int = 1000) -> TxRejected:
        """Apply `tx` alone in the next block's context; it must be rejected."""
        try:
            apply_tx(Overlay(self.store), tx, self.next_context(advance_ms))
        except TxRejected as reason:
            return reason
        raise AssertionError(f"{tx.kind} was accepted")

    # -- state helpers ----------------------------------------------------------------------
    def nonce(self, account: bytes) -> int:
        found = Overlay(self.store).load(Table.ACCOUNT, account, Account)
        return 1 if found is None else found.nonce + 1

    def vault(self, vault_id: bytes) -> Vault:
        found = Overlay(self.store).load(Table.VAULT, vault_id, Vault)
        if found is None:
            raise InvalidInput(f"no vault {vault_id.hex()}")
        return found

    def readers(self, vault_id: bytes) -> frozenset[bytes]:
        return readers_by_right(Overlay(self.store), self.vault(vault_id))

    # -- scenario steps ---------------------------------------------------------------------
    def register(self) -> None:
        draft = builders.register_patient(CHAIN_ID, self.patient_keys, self.expiry())
        self.block(draft.signed(self.p1, self.p2))

    def create_vault(
        self,
        data_type: str = "glucose",
        template: Template = Template.PATIENT_CONTROLLED,
        team: tuple[str, ...] = ("A",),
    ) -> bytes:
        if self.nonce(self.patient) == 1:
            self.register()
        team_keys = [self.hospital[name].public_key for name in team]
        members = {*self.patient_keys, *team_keys, self.trusted.public_key}
        draft, epoch_key = builders.create_vault(
            CHAIN_ID,
            self.patient,
            self.nonce(self.patient),
            self.expiry(),
            data_type=data_type,
            template=template,
            team=team_keys,
            members=members,
        )
        self.block(draft.signed(self.p1, self.p2))
        vault_id = vault_id_of(self.patient, data_type)
        self.epoch_keys[(vault_id, 1)] = epoch_key
        return vault_id

    def record_draft(
        self, vault_id: bytes, plaintext: bytes = b"5.4 mmol/L", record_time_ms: int | None = None
    ) -> builders.TxDraft:
        vault = self.vault(vault_id)
        encrypted = builders.encrypt_record(
            plaintext,
            record_id=next(self._record_ids).to_bytes(16, "big"),
            data_type=vault.data_type,
            epoch=vault.epoch,
            epoch_key=self.epoch_keys[(vault_id, vault.epoch)],
            record_time_ms=self.time_ms if record_time_ms is None else record_time_ms,
        )
        return builders.TxDraft(
            CHAIN_ID, "record.put", vault_id, self.nonce(vault_id), self.expiry(), encrypted.body
        )

    def put_record(self, vault_id: bytes, *signers: crypto.PrivateKey, **kwargs: object) -> bytes:
        draft = self.record_draft(vault_id, **kwargs)  # type: ignore[arg-type]
        self.block(draft.signed(*(signers or (self.p1, self.hospital["A"]))))
        return draft.body.record_id  # type: ignore[attr-defined, no-any-return]

    def grant_draft(
        self, vault_id: bytes, grantee: str = "B", **kwargs: object
    ) -> builders.TxDraft:
        vault = self.vault(vault_id)
        options: dict[str, object] = {
            "valid_from_ms": self.time_ms,
            "valid_until_ms": self.time_ms + 30 * DAY_MS,
        }
        options.update(kwargs)
        return builders.grant(
            CHAIN_ID,
            vault_id,
            self.nonce(vault_id),
            self.expiry(),
            grantee=self.hospital[grantee].public_key,
            epoch_key=self.epoch_keys[(vault_id, vault.epoch)],
            **options,  # type: ignore[arg-type]
        )

    def grant(self, vault_id: bytes, grantee: str = "B", **kwargs: object) -> bytes:
        tx = self.grant_draft(vault_id, grantee, **kwargs).signed(self.p1, self.p2)
        self.block(tx)
        return tx.id

    def govern_institution(self, action: InstitutionAction, name: str) -> None:
        """Governance revokes (or registers again) hospital `name`: in force two blocks on."""
        key = self.hospital[name].public_key
        institution = Institution(f"hospital-{name}", InstitutionKind.HOSPITAL, key)
        draft = builders.change_institution(
            CHAIN_ID, self.nonce(GOVERNANCE_ACCOUNT), self.expiry(), action, institution
        )
        self.block(draft.signed(*self.validator_keys[:3]))
        self.block()
        self.block()

    def rotate(self, vault_id: bytes, members: set[bytes], *signers: crypto.PrivateKey) -> Tx:
        """The vault's next epoch sealed to `members`, signed by `signers` (both patient keys
        if none are given); its key is remembered for the records that follow."""
        vault = self.vault(vault_id)
        draft, epoch_key = builders.rotate_epoch(
            CHAIN_ID, vault_id, self.nonce(vault_id), self.expiry(),
            new_epoch=vault.epoch + 1, members=members,
        )  # fmt: skip
        self.epoch_keys[(vault_id, vault.epoch + 1)] = epoch_key
        return draft.signed(*(signers or (self.p1, self.p2)))

    def receipt(self, reader: str, vault_id: bytes, record_id: bytes, grant_id: bytes = b"") -> Tx:
        """Hospital `reader`'s signed read receipt for a record (not yet in a block)."""
        key = self.hospital[reader]
        draft = builders.receipt(
            CHAIN_ID,
            key.public_key,
            self.nonce(crypto.account_id(key.public_key)),
            self.expiry(),
            vault=vault_id,
            record_id=record_id,
            grant_id=grant_id,
        )
        return draft.signed(key)

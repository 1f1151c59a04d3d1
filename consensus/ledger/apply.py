"""Applying transactions and blocks: the checks every kind shares, then the kind's function.

Order of checks for one transaction (the first failure is the reason reported):
chain id, size, expiry, signatures (canonical order, every one valid), kind, body, acting
account and nonce, then the kind's own rules. A transaction that fails changes nothing.

A block is all or nothing: a proposer only includes transactions that apply (`select_txs`), so
a block with a failing transaction is invalid and `apply_block` raises `BlockRejected`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

from carechain.consensus.codec import EncodeError, Record
from carechain.consensus.crypto import Purpose, verify
from carechain.consensus.errors import DecodeError
from carechain.consensus.ledger import (
    access,
    accounts,
    governance,
    guardians,
    institutions,
    recovery,
    vaults,
)
from carechain.consensus.ledger.bodies import BODY_TYPES
from carechain.consensus.ledger.context import (
    BlockContext,
    ChainContext,
    TxContext,
    acting_keys,
    load_account,
)
from carechain.consensus.ledger.errors import BlockRejected, TxRejected
from carechain.consensus.ledger.guardians import acting_for
from carechain.consensus.ledger.state import Overlay, StateDiff, StateReader, Table
from carechain.consensus.types import Block, Tx, TxSignature

Process = Callable[[Overlay, Any, TxContext], None]

PROCESSES: Final[dict[str, Process]] = {
    "account.register": accounts.process_register_patient,
    "policy.set": accounts.process_set_policy,
    "vault.create": vaults.process_create_vault,
    "record.put": vaults.process_put_record,
    "epoch.rotate": vaults.process_rotate_epoch,
    "record.erase": vaults.process_erase_record,
    "erasure.attest": vaults.process_attest_erasure,
    "access.grant": access.process_grant,
    "access.revoke": access.process_revoke,
    "emergency.open": access.process_open_emergency,
    "emergency.review": access.process_review_emergency,
    "access.receipt": access.process_receipt,
    "governance.validator": governance.process_change_validator,
    "governance.institution": governance.process_change_institution,
    "evidence.equivocation": governance.process_equivocation,
    "recovery.start": recovery.process_start_recovery,
    "recovery.cancel": recovery.process_cancel_recovery,
    "recovery.finish": recovery.process_finish_recovery,
    "epoch.share": recovery.process_share_epochs,
    "guardian.add": guardians.process_add_guardian,
    "guardian.remove": guardians.process_remove_guardian,
    "guardian.handover": guardians.process_handover,
    "institution.rotate_key": institutions.process_rotate_key,
    "institution.reseal": institutions.process_reseal,
}
CREATES_ACCOUNT: Final = frozenset({"account.register"})
# Self-authenticating kinds: no acting account, nonce 0, no signatures needed.
NO_ACCOUNT: Final = frozenset({"evidence.equivocation"})
NO_ACCOUNT_ID: Final = bytes(20)
# Governance's own kinds: the validators' signatures count whatever institutions they also are.
GOVERNANCE_KINDS: Final = frozenset({"governance.validator", "governance.institution"})
assert PROCESSES.keys() == BODY_TYPES.keys()

# Verifies a transaction's signatures and returns the signing keys. The default checks each
# one; a node passes a cached or batched verifier with the same contract.
SignerCheck = Callable[[Tx], frozenset[bytes]]


def verified_signers(tx: Tx) -> frozenset[bytes]:
    """The keys of the transaction's signatures; rejects unsorted, repeated or invalid ones."""
    keys = [s.public_key for s in tx.signatures]
    if keys != sorted(set(keys)):
        raise TxRejected("non_canonical_signatures", "sort signatures by key, one per key")
    for signature in tx.signatures:
        if not verify(signature.public_key, Purpose.TX, tx.chain_id, tx.id, signature.signature):
            raise TxRejected(
                "bad_signature", f"signature of {signature.public_key.hex()[:16]} does not verify"
            )
    return frozenset(keys)


def signers_of(tx_bytes: bytes) -> tuple[bytes, frozenset[bytes] | str]:
    """A transaction's witness hash and its verified signers, or why it has none (what a
    worker process verifying for a node or an auditor returns)."""
    tx = Tx.decode(tx_bytes)
    try:
        return tx.witness_hash, verified_signers(tx)
    except TxRejected as reason:
        return tx.witness_hash, str(reason)


class SignatureCache:
    """`verified_signers` that remembers: a transaction's signatures are checked once per
    node, when it is admitted, not again when a block is proposed, validated and committed.
    Keyed by the witness hash (the hash of the transaction with its signatures), so a
    transaction with another signature set is checked afresh; failures are never kept.
    A committed transaction is forgotten (`forget`): nothing verifies it again. Bounded
    besides (the oldest go first), and compact: an entry is its 32-byte key and the signer
    keys joined into one bytes object (about 250 bytes with two signers)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._signers: OrderedDict[bytes, bytes] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._signers)

    def __contains__(self, witness_hash: bytes) -> bool:
        return witness_hash in self._signers

    def remember(self, witness_hash: bytes, signers: frozenset[bytes]) -> None:
        """Record signers verified elsewhere (a worker process of this node)."""
        self._signers[witness_hash] = b"".join(sorted(signers))
        if len(self._signers) > self.size:
            self._signers.popitem(last=False)

    def forget(self, witness_hashes: Iterable[bytes]) -> None:
        for witness_hash in witness_hashes:
            self._signers.pop(witness_hash, None)

    def __call__(self, tx: Tx) -> frozenset[bytes]:
        key = tx.witness_hash
        found = self._signers.get(key)
        if found is not None:
            self.hits += 1
            return frozenset(found[i : i + 32] for i in range(0, len(found), 32))
        signers = verified_signers(tx)
        self.remember(key, signers)
        return signers


def decode_body(tx: Tx) -> Record:
    body_type = BODY_TYPES.get(tx.kind)
    if body_type is None:
        raise TxRejected("unknown_kind", f"no transaction kind {tx.kind!r}")
    try:
        return body_type.decode(tx.body)
    except DecodeError as exc:
        raise TxRejected("bad_body", f"{tx.kind} body: {exc}") from None


def check_envelope(tx: Tx, block: BlockContext) -> None:
    chain = block.chain
    if tx.chain_id != chain.chain_id:
        raise TxRejected("wrong_chain", f"for chain {tx.chain_id!r}, this is {chain.chain_id!r}")
    size = len(tx.encode())
    if size > chain.params.max_tx_bytes:
        raise TxRejected("oversize", f"{size} bytes, the limit is {chain.params.max_tx_bytes}")
    if block.time_ms > tx.expiry_ms:
        raise TxRejected("expired", f"expired at {tx.expiry_ms}, block time is {block.time_ms}")
    if tx.expiry_ms - block.time_ms > chain.params.tx_expiry_ms_max:
        raise TxRejected("expiry_too_far", "the expiry is too far ahead")


def apply_tx(
    state: Overlay, tx: Tx, block: BlockContext, check_signers: SignerCheck = verified_signers
) -> None:
    """Apply one transaction to `state`, or raise TxRejected and change nothing."""
    check_envelope(tx, block)
    signers = check_signers(tx)
    body = decode_body(tx)
    scratch = Overlay(state)
    if tx.kind in NO_ACCOUNT:
        if tx.account != NO_ACCOUNT_ID or tx.nonce != 0:
            raise TxRejected("bad_account", f"{tx.kind} names no account (zeros) and nonce 0")
        PROCESSES[tx.kind](scratch, body, TxContext(block, tx, signers))
        scratch.merge_into(state)
        return
    if tx.kind not in CREATES_ACCOUNT:
        account = load_account(scratch, tx.account)
        if tx.nonce != account.nonce + 1:
            raise TxRejected(
                "bad_nonce", f"nonce {tx.nonce}; the account's next nonce is {account.nonce + 1}"
            )
    if tx.kind in CREATES_ACCOUNT:  # no account yet, so no guardian: institution keys only
        signers = acting_keys(scratch, signers)
    elif tx.kind not in GOVERNANCE_KINDS:  # rotated and revoked institution keys, guardians
        signers = acting_for(scratch, tx, acting_keys(scratch, signers))
    try:
        PROCESSES[tx.kind](scratch, body, TxContext(block, tx, signers))
    except EncodeError as exc:  # a state entry would outgrow its bound: refused, never a crash
        raise TxRejected("state_limit", f"{tx.kind} would store {exc}") from None
    if tx.kind not in CREATES_ACCOUNT:
        account = load_account(scratch, tx.account)  # re-read: the kind may have changed it
        scratch.save(Table.ACCOUNT, tx.account, dataclasses.replace(account, nonce=tx.nonce))
    scratch.merge_into(state)


def begin_block(state: Overlay, block: BlockContext) -> None:
    governance.apply_pending(state, block.height)


def apply_block(
    reader: StateReader,
    block: Block,
    chain: ChainContext,
    check_signers: SignerCheck = verified_signers,
) -> StateDiff:
    """The state changes of a whole block; raises BlockRejected naming the failing tx."""
    context = BlockContext(chain, block.header.height, block.header.time_ms)
    state = Overlay(reader)
    begin_block(state, context)
    for index, tx in enumerate(block.txs):
        try:
            apply_tx(state, tx, context, check_signers)
        except TxRejected as reason:
            raise BlockRejected(block.header.height, index, reason) from None
    return state.diff()


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """What a proposer puts in its block, what it left out and why, and the resulting diff."""

    txs: tuple[Tx, ...]
    rejected: tuple[tuple[Tx, TxRejected], ...]
    diff: StateDiff


def select_txs(
    reader: StateReader,
    candidates: Iterable[Tx],
    block: BlockContext,
    *,
    max_txs: int,
    max_bytes: int,
    check_signers: SignerCheck = verified_signers,
    max_rejected: int | None = None,
) -> Selection:
    """Apply candidates in order, keeping those that apply, within the block's limits.
    `max_rejected`: stop after that many candidates failed to apply, so that a pool full of
    transactions that do not apply (sent by a peer, executed only here) cannot stretch the
    time a proposal takes to build past what it was given."""
    state = Overlay(reader)
    begin_block(state, block)
    chosen: list[Tx] = []
    rejected: list[tuple[Tx, TxRejected]] = []
    used = 0
    for tx in candidates:
        if len(chosen) >= max_txs:
            break
        if max_rejected is not None and len(rejected) >= max_rejected:
            break
        size = len(tx.encode())
        if used + size > max_bytes:
            continue
        try:
            apply_tx(state, tx, block, check_signers)
        except TxRejected as reason:
            rejected.append((tx, reason))
            continue
        chosen.append(tx)
        used += size
    return Selection(tuple(chosen), tuple(rejected), state.diff())


# --- partial transactions: the pure rules the node's partial pool follows ---------------------


class TxStatus(enum.Enum):
    COMPLETE = "complete"  # applies now
    PARTIAL = "partial"  # valid so far; more co-signatures would make it apply
    INVALID = "invalid"  # fails for a reason no co-signature can fix


@dataclasses.dataclass(frozen=True, slots=True)
class Classification:
    status: TxStatus
    reason: TxRejected | None = None


def classify(
    reader: StateReader,
    tx: Tx,
    block: BlockContext,
    check_signers: SignerCheck = verified_signers,
) -> Classification:
    """Would `tx` apply on top of `reader` in a block like `block`? As that block would
    execute it: after the governance changes that take effect at its height (a trusted party
    registered two blocks before is one then, and a vault's key must be sealed to it)."""
    state = Overlay(reader)
    begin_block(state, block)
    try:
        apply_tx(state, tx, block, check_signers)
    except TxRejected as reason:
        if reason.code == "policy_not_satisfied":
            return Classification(TxStatus.PARTIAL, reason)
        return Classification(TxStatus.INVALID, reason)
    return Classification(TxStatus.COMPLETE)


def may_cosign(tx: Tx, signature: TxSignature) -> bool:
    """A co-signature may be added if it verifies for this transaction and its key has not
    signed it yet."""
    if any(s.public_key == signature.public_key for s in tx.signatures):
        return False
    return verify(signature.public_key, Purpose.TX, tx.chain_id, tx.id, signature.signature)


def partial_expired(tx: Tx, first_seen_ms: int, now_ms: int, chain: ChainContext) -> bool:
    """A partial leaves the pool at its own expiry or after the chain's partial_expiry_ms."""
    return now_ms > tx.expiry_ms or now_ms - first_seen_ms > chain.params.partial_expiry_ms

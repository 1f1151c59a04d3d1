"""The node's two transaction pools.

Mempool: complete transactions waiting for a block. Bounded by count and bytes; ordered per
account by nonce (a proposer takes each account's transactions in nonce order); expired ones
and ones a commit made stale leave after every block, with the reason kept for status queries.

Partial pool: transactions whose signatures do not yet satisfy their policy. Bounded,
persisted in the node's store (they survive restarts), merged as co-signatures arrive from the
API or from peers, and expired after the chain's partial_expiry_ms (48 h by default). A
partial that becomes complete moves to the mempool.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from typing import Final

from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.ledger.apply import (
    SignerCheck,
    TxStatus,
    begin_block,
    classify,
    decode_body,
    may_cosign,
    partial_expired,
    verified_signers,
)
from carechain.consensus.ledger.context import BlockContext, ChainContext, acting_keys
from carechain.consensus.ledger.errors import PolicyNotSatisfied, TxRejected
from carechain.consensus.ledger.guardians import acting_for
from carechain.consensus.ledger.records import Account, InstitutionState
from carechain.consensus.ledger.state import Overlay, StateReader, Table
from carechain.consensus.types import Block, Tx, TxSignature
from carechain.consensus.wire import pack, unpack
from carechain.storage.kv import KV, WriteBatch
from carechain.storage.schema import partial_key

NONCE_FREE: Final = ("account.register", "evidence.equivocation")


class PoolFull(CarechainError):
    code = "pool_full"


class UnknownPartial(InvalidInput):
    code = "unknown_partial"


def _next_nonce(state: StateReader, account: bytes) -> int:
    found = Overlay(state).load(Table.ACCOUNT, account, Account)
    return 1 if found is None else found.nonce + 1


def admit(
    state: StateReader,
    tx: Tx,
    block: BlockContext,
    check_signers: SignerCheck = verified_signers,
    *,
    execute: bool = True,
) -> TxStatus:
    """Check what can be checked before ordering: envelope, signatures, body, nonce not
    behind. A nonce ahead of the next one is queued; at the next nonce the full rules apply.
    Signatures are checked once, through `check_signers` (the node's cache).

    `execute=False` is for a complete transaction a peer sent directly (a validator relaying
    what its API took in and executed, an admitted non-validator node passing on its
    clients'): it is not executed here (the envelope, signatures, body and nonce still are
    checked); the proposal's execution drops it, with its reason, if it does not apply. So a
    transaction costs the network one execution on admission, at the node a client gave it
    to, however it travels; a peer sending transactions that fail wastes proposal work, no
    more, and only up to the mempool's bound."""
    if tx.chain_id != block.chain.chain_id:
        raise TxRejected("wrong_chain", f"for chain {tx.chain_id!r}")
    if len(tx.encode()) > block.chain.params.max_tx_bytes:
        raise TxRejected("oversize", "larger than max_tx_bytes")
    if block.time_ms > tx.expiry_ms:
        raise TxRejected("expired", "past its expiry")
    check_signers(tx)
    decode_body(tx)
    if tx.kind in NONCE_FREE:
        free = classify(state, tx, block, check_signers)
        if free.status is TxStatus.PARTIAL:
            _require_standing(state, block, tx, free.reason)
        return free.status
    expected = _next_nonce(state, tx.account)
    if tx.nonce < expected:
        raise TxRejected("bad_nonce", f"nonce {tx.nonce} is spent; next is {expected}")
    if not execute:
        return TxStatus.COMPLETE
    if tx.nonce > expected:
        # Queued behind the account's earlier transactions, which may change what it finds;
        # but whether its signatures satisfy the policy is known now: try it as if they had
        # applied, so a partial goes to the partial pool and not into a block it would fail.
        ahead = _as_if_next(state, tx)
        if ahead is None:
            return TxStatus.COMPLETE
        guess = classify(ahead, tx, block, check_signers)
        if guess.status is not TxStatus.PARTIAL:
            return TxStatus.COMPLETE
        _require_standing(ahead, block, tx, guess.reason)
        return TxStatus.PARTIAL
    result = classify(state, tx, block, check_signers)
    if result.status is TxStatus.INVALID:
        assert result.reason is not None
        raise result.reason
    if result.status is TxStatus.PARTIAL:
        _require_standing(state, block, tx, result.reason)
    return result.status


def _require_standing(
    state: StateReader, block: BlockContext, tx: Tx, reason: TxRejected | None
) -> None:
    """A partial is kept (and spread) only if someone with standing began it: one of its
    signatures is by a key the policy it waits on names (the patient, a team hospital, a
    validator for governance) or by a registered, active institution (a hospital asking a
    trusted party to co-sign its emergency access). Without this rule anyone could fill every
    node's partial pool, up to its per-account bound for every account, with transactions
    nobody will complete (unsigned, or signed by throwaway keys), and every patient's
    "awaiting your signature" list with them."""
    if not isinstance(reason, PolicyNotSatisfied):
        return
    view = Overlay(state)
    begin_block(view, block)  # the institutions as the next block has them, as `classify`
    keys = acting_keys(view, frozenset(s.public_key for s in tx.signatures))
    # a minor's own key begins a partial its guardian completes: standing, though it counts not
    signers = keys | acting_for(view, tx, keys)
    if signers & reason.policy.all_keys():
        return
    for key in sorted(signers):
        found = view.load(Table.INSTITUTION, key, InstitutionState)
        if found is not None and found.active:
            return
    raise TxRejected(
        "no_standing",
        f"none of its {len(signers)} signature(s) is by a key the policy it needs names or "
        "by a registered institution: a partial must be signed first by the patient, a team "
        "hospital, a validator (governance) or the institution asking",
    )


# Partials one account may have waiting at once: a bound on what each block that touches the
# account re-judges (and on what one sender can make a node hold for one account).
PARTIALS_PER_ACCOUNT_MAX: Final = 64
# Why a transaction refused now is refused for good: a nonce behind the account's (spent), an
# epoch behind the vault's (epochs only move on), past its expiry.
PERMANENT_REJECTIONS: Final = frozenset({"bad_nonce", "stale_epoch", "expired"})


def _as_if_next(state: StateReader, tx: Tx) -> Overlay | None:
    """`state` with `tx`'s account moved on to just before `tx`'s nonce (its earlier
    transactions as if applied), or None if the account does not exist yet."""
    ahead = Overlay(state)
    account = ahead.load(Table.ACCOUNT, tx.account, Account)
    if account is None:
        return None
    ahead.save(Table.ACCOUNT, tx.account, dataclasses.replace(account, nonce=tx.nonce - 1))
    return ahead


def standing(
    state: StateReader, tx: Tx, block: BlockContext, check_signers: SignerCheck
) -> tuple[frozenset[bytes], TxRejected | None]:
    """How a partial stands now: the keys whose signature could still help complete it (none
    if it is complete or can no longer apply), and why it cannot apply (None if it can). A
    nonce ahead is judged as if its account's earlier transactions had applied."""
    view: StateReader = state
    if tx.kind not in NONCE_FREE and tx.nonce > _next_nonce(state, tx.account):
        view = _as_if_next(state, tx) or state
    result = classify(view, tx, block, check_signers)
    reason = result.reason
    if isinstance(reason, PolicyNotSatisfied):
        policy = reason.policy
        signers = {s.public_key for s in tx.signatures}
        return frozenset(policy.all_keys() - signers), None
    return frozenset(), reason


class Mempool:
    def __init__(self, txs_max: int, bytes_max: int) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self.txs: OrderedDict[bytes, Tx] = OrderedDict()  # in arrival order
        self.size_bytes = 0
        self.rejected: OrderedDict[bytes, str] = OrderedDict()  # recent drops' codes, for status
        self.rejected_why: dict[bytes, str] = {}  # and what each code meant there
        self.rejection_counts: Counter[str] = Counter()  # every drop with a reason, by reason
        self._arrived_ms: dict[bytes, int] = {}
        self._resent_ms: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.txs)

    def add(self, tx: Tx, now_ms: int) -> bool:
        if tx.id in self.txs:
            return False
        size = len(tx.encode())
        if len(self.txs) >= self.txs_max or self.size_bytes + size > self.bytes_max:
            raise PoolFull(f"the mempool is full ({len(self.txs)} transactions); retry later")
        self.txs[tx.id] = tx
        self._arrived_ms[tx.id] = now_ms
        self.size_bytes += size
        return True

    def arrived_since(self, since_ms: int) -> int:
        """How many pending transactions arrived at `since_ms` or later (the newest are
        last: counted from the end)."""
        count = 0
        for tx_id in reversed(self._arrived_ms):
            if self._arrived_ms[tx_id] < since_ms:
                break
            count += 1
        return count

    def to_resend(self, now_ms: int, waited_ms: int, limit: int) -> list[Tx]:
        """Up to `limit` transactions, longest waiting first, that have waited `waited_ms`
        and were not sent again in the last `waited_ms`; each is marked sent now. (A peer
        that missed one gets it again; one that has it is not sent it every round.)"""
        found: list[Tx] = []
        for tx_id, tx in self.txs.items():
            if len(found) >= limit or now_ms - self._arrived_ms[tx_id] < waited_ms:
                break
            if now_ms - self._resent_ms.get(tx_id, now_ms - waited_ms) >= waited_ms:
                self._resent_ms[tx_id] = now_ms
                found.append(tx)
        return found

    def _drop(self, tx_id: bytes, reason: str | None, why: str = "") -> None:
        tx = self.txs.pop(tx_id, None)
        self._arrived_ms.pop(tx_id, None)
        self._resent_ms.pop(tx_id, None)
        if tx is not None:
            self.size_bytes -= len(tx.encode())
        if reason is not None:
            self.rejection_counts[reason] += 1
            self.rejected[tx_id] = reason
            self.rejected_why[tx_id] = why
            while len(self.rejected) > 10_000:
                gone, _ = self.rejected.popitem(last=False)
                self.rejected_why.pop(gone, None)

    def ordered(self) -> Iterator[Tx]:
        """Per account in nonce order; accounts in arrival order of their first transaction."""
        by_account: dict[bytes, list[Tx]] = {}
        for tx in self.txs.values():
            by_account.setdefault(tx.account, []).append(tx)
        for txs in by_account.values():
            yield from sorted(txs, key=lambda tx: tx.nonce)

    def after_commit(self, block: Block, state: StateReader, now_ms: int) -> None:
        """Drop what the block included, what expired, and what it made stale: transactions
        of the accounts it touched whose nonce is now spent. Nothing else is re-executed
        here (that would cost a full check of the whole pool per block); a transaction a
        block made invalid in another way is dropped, with its reason, by the next proposal
        that tries it."""
        touched = {tx.account for tx in block.txs}
        for tx in block.txs:
            self._drop(tx.id, None)
        next_nonces: dict[bytes, int] = {}
        for tx in list(self.txs.values()):
            if now_ms > tx.expiry_ms:
                self._drop(tx.id, "expired", "it expired before a block took it")
            elif tx.account in touched and tx.kind not in NONCE_FREE:
                if tx.account not in next_nonces:
                    next_nonces[tx.account] = _next_nonce(state, tx.account)
                if tx.nonce < next_nonces[tx.account]:
                    self._drop(tx.id, "bad_nonce", "another transaction took its nonce")

    def drop_rejected(self, rejected: list[tuple[Tx, TxRejected]], state: StateReader) -> None:
        """What a proposer could not include leaves the pool with its reason, except a
        transaction whose nonce is ahead: its predecessor has not reached this node yet (it
        was sent to another one), and it stays until that arrives or it expires."""
        for tx, reason in rejected:
            if reason.code == "bad_nonce" and tx.nonce > _next_nonce(state, tx.account):
                continue
            self._drop(tx.id, reason.code, reason.detail)


@dataclasses.dataclass
class Partial:
    tx: Tx
    first_seen_ms: int
    # how it stands, judged when it arrives or gains a signature and after each block that
    # touches its account (None: not judged since this node started): the keys that could
    # still help complete it, and why it cannot apply now (a reason code), if it cannot
    needs: frozenset[bytes] | None = None
    problem: str | None = None


class PartialPool:
    """Partial transactions waiting for co-signatures, kept in the node's LevelDB so that a
    restart keeps them. Writes are not fsynced: a crashed or killed process loses nothing (the
    operating system holds the write), a power cut may lose the last seconds' partials, which
    every other node holds too and the initiator can send again. Syncing each one cost an
    fsync per partial on every node (about a tenth of a validator's time under load)."""

    def __init__(self, kv: KV, partials_max: int) -> None:
        self.kv = kv
        self.partials_max = partials_max
        self.partials: dict[bytes, Partial] = {}
        self.per_account: Counter[bytes] = Counter()
        for _, value in kv.iterate(partial_key(b"")):
            stored = unpack(value)
            assert isinstance(stored, list), "a stored partial is [tx, first seen]"
            tx_bytes, first_seen = stored
            assert isinstance(tx_bytes, bytes)
            assert isinstance(first_seen, int)
            tx = Tx.decode(tx_bytes)
            self.partials[tx.id] = Partial(tx, first_seen)
            self.per_account[tx.account] += 1

    def __len__(self) -> int:
        return len(self.partials)

    def _save(self, partial: Partial) -> None:
        batch = WriteBatch()
        batch.put(partial_key(partial.tx.id), pack([partial.tx.encode(), partial.first_seen_ms]))
        self.kv.write(batch, sync=False)

    def remove(self, tx_id: bytes) -> None:
        self.remove_all([tx_id])

    def remove_all(self, tx_ids: Iterable[bytes]) -> None:
        """Forget these (committed, say), in one write."""
        batch = WriteBatch()
        for tx_id in tx_ids:
            gone = self.partials.pop(tx_id, None)
            if gone is not None:
                batch.delete(partial_key(tx_id))
                self.per_account[gone.tx.account] -= 1
                if not self.per_account[gone.tx.account]:
                    del self.per_account[gone.tx.account]
        if batch.operations:
            self.kv.write(batch, sync=False)

    def merged(self, tx: Tx) -> Tx:
        """`tx` with the signatures of the copy held here (the pool unchanged): what is
        admitted, before `merge` keeps it, so a copy the ledger refuses changes nothing."""
        known = self.partials.get(tx.id)
        if known is None:
            return tx
        merged = known.tx
        for signature in tx.signatures:
            if may_cosign(merged, signature):
                merged = merged.with_signature(signature)
        return merged

    def merge(self, tx: Tx, now_ms: int) -> Tx:
        """Add a partial or the signatures it brings; returns the merged transaction."""
        known = self.partials.get(tx.id)
        if known is None:
            if len(self.partials) >= self.partials_max:
                raise PoolFull(f"the partial pool holds {self.partials_max} transactions")
            if self.per_account[tx.account] >= PARTIALS_PER_ACCOUNT_MAX:
                raise PoolFull(
                    f"account {tx.account.hex()} has {PARTIALS_PER_ACCOUNT_MAX} partial "
                    "transactions waiting; sign or let some expire first"
                )
            known = Partial(tx, now_ms)
            self.partials[tx.id] = known
            self.per_account[tx.account] += 1
        else:
            known.tx = self.merged(tx)
        self._save(known)
        return known.tx

    def with_cosignature(self, tx_id: bytes, signature: TxSignature) -> Tx:
        """The partial `tx_id` with `signature` added, not kept yet (admitting it keeps it)."""
        known = self.partials.get(tx_id)
        if known is None:
            raise UnknownPartial(f"no partial transaction {tx_id.hex()} waits here")
        if not may_cosign(known.tx, signature):
            raise TxRejected(
                "bad_signature", "the co-signature does not verify for this transaction"
            )
        return known.tx.with_signature(signature)

    def judge(
        self, tx: Tx, state: StateReader, context: BlockContext, check_signers: SignerCheck
    ) -> tuple[frozenset[bytes], TxRejected | None]:
        """Judge how the partial `tx` stands now (see `standing`) and keep the answer with it,
        for listings to read without executing anything."""
        needs, problem = standing(state, tx, context, check_signers)
        known = self.partials.get(tx.id)
        if known is not None:
            known.needs, known.problem = needs, problem.code if problem else None
        return needs, problem

    def drop_dead(
        self, block: Block, state: StateReader, chain: ChainContext, check_signers: SignerCheck
    ) -> list[tuple[Tx, TxRejected]]:
        """After a commit: the partials of the accounts it touched that can never commit now,
        with the reason (another transaction took their nonce, the vault moved to a new epoch
        under a record sealed for the old one, it expired by the block's time); the rest of
        them are judged again. Judged against the block's own time, every node drops the same
        ones; a partial queued behind earlier ones of its account is not dropped for an epoch
        (one of those may move the vault to it)."""
        touched = {tx.account for tx in block.txs}
        context = BlockContext(chain, block.header.height + 1, block.header.time_ms)
        dead = []
        for partial in list(self.partials.values()):
            tx = partial.tx
            if tx.account not in touched:
                continue
            _, problem = self.judge(tx, state, context, check_signers)
            if problem is None or problem.code not in PERMANENT_REJECTIONS:
                continue
            queued = tx.kind not in NONCE_FREE and tx.nonce > _next_nonce(state, tx.account)
            if problem.code == "stale_epoch" and queued:
                continue
            dead.append((tx, problem))
        self.remove_all(tx.id for tx, _ in dead)
        return dead

    def expire(self, now_ms: int, chain: ChainContext) -> list[bytes]:
        gone = [
            i
            for i, p in self.partials.items()
            if partial_expired(p.tx, p.first_seen_ms, now_ms, chain)
        ]
        for tx_id in gone:
            self.remove(tx_id)
        return gone

"""Signature checks in worker processes: they record only what verifies, and change no verdict."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.ledger.apply import SignatureCache, verified_signers
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.types import Tx, TxSignature
from carechain.node.verifier import SignatureWorkers

KEYS = [PrivateKey(bytes([90 + i]) * 32) for i in range(2)]


def _txs(count: int) -> list[Tx]:
    return [
        Tx("carechain-test", "record.put", bytes(20), n, 2**40, b"body").signed_by(KEYS[0])
        for n in range(1, count + 1)
    ]


def _forged(tx: Tx) -> Tx:
    signature = tx.signatures[0]
    forged = TxSignature(signature.public_key, bytes(64))
    return dataclasses.replace(tx, signatures=(forged,))


def test_workers_record_what_verifies_and_leave_the_rest_to_the_inline_check() -> None:
    cache = SignatureCache()
    workers = SignatureWorkers(cache, workers=2)
    good = _txs(6)
    bad = _forged(_txs(7)[-1])
    try:
        asyncio.run(workers.verify([*good, bad], batch_min=4))
    finally:
        workers.close()
    assert workers.verified == 6
    assert all(tx.witness_hash in cache for tx in good)
    assert bad.witness_hash not in cache
    assert cache(good[0]) == frozenset({KEYS[0].public_key})
    with pytest.raises(TxRejected) as refused:
        cache(bad)  # verified inline, refused with the reason
    assert refused.value.code == "bad_signature"
    with pytest.raises(TxRejected):
        verified_signers(bad)


def test_small_batches_and_cached_transactions_stay_inline() -> None:
    cache = SignatureCache()
    workers = SignatureWorkers(cache, workers=2)
    txs = _txs(4)
    for tx in txs[:1]:
        cache(tx)
    try:
        asyncio.run(workers.verify(txs[:3], batch_min=4))  # fewer than batch_min
        asyncio.run(workers.verify(txs, batch_min=4))  # only 3 not cached yet: fewer
    finally:
        workers.close()
    assert workers.verified == 0
    assert workers._pool is None  # never started


def test_copies_of_one_transaction_in_a_batch_are_verified_once() -> None:
    cache = SignatureCache()
    workers = SignatureWorkers(cache, workers=2)
    txs = _txs(4)
    try:
        asyncio.run(workers.verify([*txs, *txs, txs[0]], batch_min=4))
    finally:
        workers.close()
    assert workers.verified == 4
    assert all(tx.witness_hash in cache for tx in txs)

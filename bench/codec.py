"""Codec and signature rates for a typical transaction (a `record.put` with a small inline
reading and two signatures, hospital and patient). The Ed25519 verify rate measured here is
the ceiling later benchmarks compare against.

Run: .venv/bin/python bench/codec.py
"""

from __future__ import annotations

import hashlib

from common import rate, report

from carechain.consensus import wire
from carechain.consensus.crypto import PrivateKey, Purpose, account_id, verify
from carechain.consensus.types import Tx


def typical_transaction() -> tuple[Tx, PrivateKey]:
    hospital, patient = PrivateKey(b"\x01" * 32), PrivateKey(b"\x02" * 32)
    body = wire.pack(
        [1, b"v" * 20, b"r" * 16, "glucose", b"c" * 36, 212, 3, b"k" * 120, b"i" * 180]
    )
    tx = Tx("carechain-bench", "record.put", account_id(patient.public_key), 42, 2**41, body)
    return tx.signed_by(hospital).signed_by(patient), hospital


def main() -> None:
    tx, hospital = typical_transaction()
    encoded = tx.encode()
    signature = tx.signatures[0].signature
    signer = tx.signatures[0].public_key
    figures = {
        "tx_bytes": len(encoded),
        # a transaction keeps its encoding once made: this measures making it
        "encode_per_s": rate(lambda: wire.pack(tx.to_wire()), batch=1000),
        "decode_per_s": rate(lambda: Tx.decode(encoded), batch=1000),
        "tx_id_per_s": rate(lambda: Tx.decode(encoded).id, batch=1000),
        "sha256_per_s": rate(lambda: hashlib.sha256(encoded).digest(), batch=10000),
        "ed25519_sign_per_s": rate(lambda: hospital.sign(Purpose.TX, tx.chain_id, tx.id)),
        "ed25519_verify_per_s": rate(
            lambda: verify(signer, Purpose.TX, tx.chain_id, tx.id, signature)
        ),
    }
    figures["decode_vs_verify_ratio"] = figures["decode_per_s"] / figures["ed25519_verify_per_s"]
    report("codec", figures)


if __name__ == "__main__":
    main()

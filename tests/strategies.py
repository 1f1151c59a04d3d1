"""Hypothesis strategies for every consensus type, shared by the test suites."""

from __future__ import annotations

from hypothesis import strategies as st

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.genesis import (
    ConsensusParams,
    DataType,
    Genesis,
    Institution,
    InstitutionKind,
)
from carechain.consensus.poa.messages import Commit, Lock, Proposal
from carechain.consensus.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Tx,
    TxSignature,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
hash32 = st.binary(min_size=32, max_size=32)
key32 = st.binary(min_size=32, max_size=32)
sig64 = st.binary(min_size=64, max_size=64)
account20 = st.binary(min_size=20, max_size=20)
chain_ids = st.text(min_size=1, max_size=64)
names = st.text(min_size=1, max_size=64)
heights = st.integers(min_value=1, max_value=2**63)
rounds = st.integers(min_value=0, max_value=2**31)

tx_signatures = st.builds(TxSignature, key32, sig64)
txs = st.builds(
    Tx,
    chain_ids,
    st.text(min_size=1, max_size=32),
    account20,
    u64,
    u64,
    st.binary(max_size=512),
    st.lists(tx_signatures, max_size=4).map(tuple),
)
validators = st.builds(Validator, names, key32, key32, st.integers(1, 2**32))
validator_sets = st.lists(validators, min_size=1, max_size=8, unique_by=lambda v: v.public_key).map(
    ValidatorSet.of
)
headers = st.builds(
    BlockHeader, chain_ids, heights, rounds, u64, key32, hash32, hash32, hash32, hash32, hash32
)
blocks = st.builds(Block, headers, st.lists(txs, max_size=3).map(tuple))
votes = st.builds(
    Vote,
    chain_ids,
    st.sampled_from(VoteType),
    heights,
    rounds,
    st.one_of(st.just(b""), hash32),
    key32,
    st.one_of(st.just(b""), sig64),
)
certificates = st.builds(
    CommitCertificate,
    heights,
    rounds,
    hash32,
    st.lists(st.builds(CommitSignature, key32, sig64), min_size=1, max_size=5).map(tuple),
)
proposals = st.builds(
    Proposal,
    chain_ids,
    heights,
    rounds,
    st.integers(-1, 2**31),
    blocks,
    key32,
    st.one_of(st.just(b""), sig64),
)
commits = st.builds(Commit, blocks, certificates)
locks = st.builds(Lock, blocks, st.lists(votes, min_size=1, max_size=3).map(tuple))
institutions = st.builds(Institution, names, st.sampled_from(InstitutionKind), key32)
data_types = st.builds(
    DataType,
    st.text(min_size=1, max_size=32),
    st.text(min_size=1, max_size=128),
    st.text(min_size=1, max_size=64),
    st.lists(st.text(min_size=1, max_size=16), max_size=3).map(tuple),
)
params = st.builds(
    ConsensusParams,
    st.integers(1024, 64 * 1024 * 1024),
    st.integers(1, 20_000),
)
geneses = st.builds(
    Genesis,
    chain_ids,
    u64,
    validator_sets,
    st.integers(1, 128),
    st.lists(institutions, max_size=3).map(tuple),
    params,
    st.lists(data_types, max_size=2).map(tuple),
)

ALL_RECORDS = {
    "TxSignature": tx_signatures,
    "Tx": txs,
    "Validator": validators,
    "ValidatorSet": validator_sets,
    "BlockHeader": headers,
    "Block": blocks,
    "Vote": votes,
    "CommitCertificate": certificates,
    "Proposal": proposals,
    "Commit": commits,
    "Lock": locks,
    "Institution": institutions,
    "DataType": data_types,
    "ConsensusParams": params,
    "Genesis": geneses,
}


def deterministic_key(index: int) -> PrivateKey:
    """Fixed test keys: the same index always gives the same key."""
    return PrivateKey(index.to_bytes(4, "big") * 8)

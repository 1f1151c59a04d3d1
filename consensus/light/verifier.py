"""Trusting a header without replaying the chain, as CometBFT's light client does.

A client starts from what it trusts (its own copy of genesis, or a height and header hash it
was given) and moves its trust forward one `LightBlock` at a time (a header, its commit
certificate and the validator set that signed it):

- **Adjacent** (height + 1): the new header names the trusted one as its parent, its validator
  set is the one the trusted header announced (`next_validator_set_hash`), and more than 2/3 of
  that set's power signed it.
- **Skipping** (any later height): more than 1/3 of the power of the set the trusted header
  announced signed the new header, so at least one validator the client trusts vouches for it,
  and more than 2/3 of the new header's own set signed it. When the 1/3 is not met (the set
  changed too much since), `TrustInsufficient` says so and the client bisects: it trusts a
  height between first (at 9/16 of the way, as CometBFT), then tries again from there.

Trust expires: the validators of a trusted header are assumed honest (fewer than 1/3 of the
power faulty) for `trusting_period_ms` after its time, and no longer: a validator removed long
ago could sign an alternative history at no cost. A client whose newest trusted header is older
than that is refused and must be given a recent height and header hash it trusts (from its own
node, or its consortium's coordinator), as CometBFT's. A header may not claim a time beyond the
client's clock plus `clock_drift_ms`.

Everything here is pure: the shell hands in a `fetch(height)` that returns the light block a
node serves, and the current time. Any answer that does not verify is a `VerificationError`
naming what failed; nothing unverified is ever returned as trusted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.governance import genesis_state
from carechain.consensus.ledger.state_proof import ProofError, StateProof, verify
from carechain.consensus.ledger.state_tree import Leaf, root_of
from carechain.consensus.types import (
    ZERO_HASH,
    BlockHeader,
    CommitCertificate,
    ValidatorSet,
)

BISECTIONS_MAX: Final = 64  # a sync that needs more pivots than this is refused, not looped


class VerificationError(InvalidInput):
    """A node's answer does not verify against what the client trusts."""

    code = "not_verified"


class TrustInsufficient(VerificationError):
    """Too little of the trusted set's power signed the header: bisect."""

    code = "trust_insufficient"


@dataclasses.dataclass(frozen=True, slots=True)
class LightBlock:
    header: BlockHeader
    certificate: CommitCertificate
    validators: ValidatorSet

    @property
    def height(self) -> int:
        return self.header.height

    @classmethod
    def decode(cls, header: bytes, certificate: bytes, validators: bytes) -> LightBlock:
        """From the canonical encodings a node serves; VerificationError if any is not one."""
        try:
            return cls(
                BlockHeader.decode(header),
                CommitCertificate.decode(certificate),
                ValidatorSet.decode(validators),
            )
        except CarechainError as exc:
            raise VerificationError(f"a light block is unreadable: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Trusted:
    """What the client trusts at one height: enough to verify the next step and any entry."""

    chain_id: str
    height: int
    block_hash: bytes
    time_ms: int
    state_root: bytes
    next_validator_set_hash: bytes
    signed_power: int = 0  # the certificate's signers' power (0 for genesis)
    total_power: int = 0

    @classmethod
    def of_genesis(cls, genesis: Genesis) -> Trusted:
        """Height 0: the client's own genesis, its state computed here."""
        entries = genesis_state(genesis).diff().entries
        root = root_of(Leaf.of(e.table, e.key, e.new) for e in entries if e.new is not None)
        return cls(
            genesis.chain_id,
            0,
            ZERO_HASH,
            genesis.genesis_time_ms,
            root,
            genesis.validators.hash(),
        )

    def verified_by(self) -> str:
        """How this height came to be trusted, in words."""
        if self.height == 0:
            return "verified at height 0 against your genesis"
        return (
            f"verified at height {self.height} by {self.signed_power} of {self.total_power} "
            "validators' power"
        )

    @classmethod
    def of_block(cls, block: LightBlock) -> Trusted:
        header = block.header
        signers = {entry.validator for entry in block.certificate.precommits}
        return cls(
            header.chain_id,
            header.height,
            header.hash(),
            header.time_ms,
            header.state_root,
            header.next_validator_set_hash,
            block.validators.power_of(signers),
            block.validators.total_power,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Clock:
    now_ms: int
    trusting_period_ms: int = 14 * 24 * 3600 * 1000
    clock_drift_ms: int = 10_000


def check_not_expired(trusted: Trusted, clock: Clock) -> None:
    if clock.now_ms >= trusted.time_ms + clock.trusting_period_ms:
        raise VerificationError(
            f"the newest trusted header (height {trusted.height}) is older than the trusting "
            "period",
            code="trust_expired",
            hint="start again from a recent height and header hash you trust",
        )


def verify_adjacent(trusted: Trusted, block: LightBlock, clock: Clock) -> Trusted:
    header = block.header
    if header.height != trusted.height + 1:
        raise VerificationError(f"height {header.height} does not follow {trusted.height}")
    if header.parent_hash != trusted.block_hash:
        raise VerificationError(
            f"height {header.height}: its parent is not the trusted block of {trusted.height} "
            "(a fork, or another chain)"
        )
    if header.validator_set_hash != trusted.next_validator_set_hash:
        raise VerificationError(
            f"height {header.height}: signed by a validator set the trusted header did not name"
        )
    return _verify_own(trusted, block, clock)


def verify_skipping(
    trusted: Trusted, trusted_next: ValidatorSet, block: LightBlock, clock: Clock
) -> Trusted:
    """`trusted_next`: the set the trusted header named for the height after it."""
    header = block.header
    if header.height <= trusted.height + 1:
        raise VerificationError(f"height {header.height} is not beyond {trusted.height + 1}")
    if trusted_next.hash() != trusted.next_validator_set_hash:
        raise VerificationError(
            f"the validator set given for height {trusted.height + 1} is not the one the "
            "trusted header names"
        )
    signers = {entry.validator for entry in block.certificate.precommits}
    power = trusted_next.power_of(signers)
    if 3 * power <= trusted_next.total_power:
        raise TrustInsufficient(
            f"height {header.height}: {power} of {trusted_next.total_power} trusted power "
            "signed it, not more than 1/3"
        )
    return _verify_own(trusted, block, clock)  # checks each of those signatures


def _verify_own(trusted: Trusted, block: LightBlock, clock: Clock) -> Trusted:
    """The block is sound by itself: the trusted chain, its own set, >2/3 of it signed."""
    header = block.header
    if header.chain_id != trusted.chain_id:
        raise VerificationError(f"height {header.height} is of chain {header.chain_id!r}")
    if header.time_ms <= trusted.time_ms:
        raise VerificationError(f"height {header.height}: its time does not move forward")
    if header.time_ms >= clock.now_ms + clock.clock_drift_ms:
        raise VerificationError(f"height {header.height}: its time is in the future")
    if header.validator_set_hash != block.validators.hash():
        raise VerificationError(f"height {header.height}: the validator set served is not its")
    if block.certificate.height != header.height:
        raise VerificationError(f"height {header.height}: the certificate is of another height")
    try:
        block.certificate.verify(header.chain_id, block.validators, header.hash())
    except CarechainError as exc:
        raise VerificationError(str(exc), code=exc.code) from None
    return Trusted.of_block(block)


Fetch = Callable[[int], LightBlock]


def sync_to(trusted: Trusted, target: int, fetch: Fetch, clock: Clock) -> list[Trusted]:
    """Move trust from `trusted` to height `target`: one step when more than 1/3 of the
    trusted set signed the target, bisecting otherwise. Returns every height newly trusted,
    in order, the target last."""
    if target <= trusted.height:
        raise VerificationError(f"height {target} is not beyond the trusted {trusted.height}")
    check_not_expired(trusted, clock)

    def fetched(height: int) -> LightBlock:
        block = fetch(height)
        if block.height != height:
            raise VerificationError(f"asked for height {height}, a node served {block.height}")
        return block

    newly: list[Trusted] = []
    pending = [fetched(target)]
    pivots = 0
    while pending:
        candidate = pending[-1]
        try:
            if candidate.height == trusted.height + 1:
                trusted = verify_adjacent(trusted, candidate, clock)
            else:
                next_set = fetched(trusted.height + 1).validators
                trusted = verify_skipping(trusted, next_set, candidate, clock)
        except TrustInsufficient:
            pivots += 1
            if pivots > BISECTIONS_MAX:
                raise VerificationError(
                    f"no path of trust to height {target} in {BISECTIONS_MAX} bisections"
                ) from None
            pivot = trusted.height + max(1, (candidate.height - trusted.height) * 9 // 16)
            pending.append(fetched(pivot))
            continue
        newly.append(trusted)
        pending.pop()
    return newly


def verify_entry(
    trusted: Trusted, table: int, key: bytes, value: bytes | None, proof: StateProof
) -> None:
    """The state of the trusted height holds `value` at `(table, key)` (None: nothing)."""
    try:
        verify(trusted.state_root, table, key, value, proof)
    except ProofError as exc:
        raise VerificationError(f"height {trusted.height}: {exc}", code=exc.code) from None

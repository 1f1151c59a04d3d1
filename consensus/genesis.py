"""Genesis: the chain's identity, first validators, institutions and consensus parameters.

Only genesis and chain state decide what is valid; a node's local configuration never does.
The genesis hash (sha256 of this record's canonical encoding) names the network.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Annotated, Final

from carechain.consensus.codec import IntRange, Record, Size
from carechain.consensus.types import ChainId, Name, PublicKey, Validator, ValidatorSet

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS


class InstitutionKind(enum.IntEnum):
    HOSPITAL = 1
    TRUSTED_PARTY = 2
    LAB = 3
    PHARMACY = 4
    CLINIC = 5
    AUDITOR = 6


@dataclasses.dataclass(frozen=True, slots=True)
class Institution(Record):
    name: Name
    kind: InstitutionKind
    public_key: PublicKey


@dataclasses.dataclass(frozen=True, slots=True)
class DataType(Record):
    """A clinical data type a vault can hold, with its LOINC / FHIR codes."""

    name: Annotated[str, Size(1, 32)]
    title: Annotated[str, Size(1, 128)]
    fhir_resource: Annotated[str, Size(1, 64)]
    loinc_codes: Annotated[tuple[Annotated[str, Size(1, 16)], ...], Size(0, 8)]


@dataclasses.dataclass(frozen=True, slots=True)
class ConsensusParams(Record):
    max_block_bytes: Annotated[int, IntRange(1024, 64 * 1024 * 1024)] = 8 * 1024 * 1024
    max_block_txs: Annotated[int, IntRange(1, 20_000)] = 10_000
    max_tx_bytes: Annotated[int, IntRange(256, 1024 * 1024)] = 300 * 1024
    emergency_duration_ms_max: Annotated[int, IntRange(60_000, 30 * DAY_MS)] = 72 * HOUR_MS
    partial_expiry_ms: Annotated[int, IntRange(60_000, 30 * DAY_MS)] = 48 * HOUR_MS
    heartbeat_interval_ms: Annotated[int, IntRange(1_000, DAY_MS)] = 60_000
    clock_drift_ms_max: Annotated[int, IntRange(10, 600_000)] = 2_000
    tx_expiry_ms_max: Annotated[int, IntRange(60_000, 365 * DAY_MS)] = 30 * DAY_MS
    # a slow key-loss recovery's window, in which the patient's keys may cancel it
    recovery_delay_ms: Annotated[int, IntRange(60_000, 30 * DAY_MS)] = 72 * HOUR_MS


@dataclasses.dataclass(frozen=True)
class Genesis(Record):
    chain_id: ChainId
    genesis_time_ms: int
    validators: ValidatorSet
    # Signatures of the validators' governance account needed: k of n validator keys.
    governance_threshold: Annotated[int, IntRange(1, 128)]
    institutions: Annotated[tuple[Institution, ...], Size(0, 4096)]
    params: ConsensusParams
    extra_data_types: Annotated[tuple[DataType, ...], Size(0, 256)]

    @functools.cached_property
    def genesis_hash(self) -> bytes:
        return self.hash()


def default_governance_threshold(validator_count: int) -> int:
    """ceil(2n/3) of the validators' keys."""
    return -(-2 * validator_count // 3)


__all__ = [
    "ConsensusParams",
    "DataType",
    "Genesis",
    "Institution",
    "InstitutionKind",
    "Validator",
    "ValidatorSet",
    "default_governance_threshold",
]

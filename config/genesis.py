"""`genesis.json`: loading, validating and writing the document every node of a network shares.

The file is JSON (keys as hex, node ids as libp2p peer ids, time as RFC 3339); it is turned into
the canonical `consensus.genesis.Genesis` record whose hash names the network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from carechain.config.loading import (
    ConfigError,
    StrictModel,
    read_json,
    validate,
    write_atomic,
)
from carechain.consensus.codec import EncodeError
from carechain.consensus.crypto import peer_id, public_key_from_peer_id
from carechain.consensus.errors import AddressError, InvalidInput
from carechain.consensus.genesis import (
    ConsensusParams,
    DataType,
    Genesis,
    Institution,
    InstitutionKind,
    default_governance_threshold,
)
from carechain.consensus.ledger.datatypes import data_type_registry
from carechain.consensus.types import Validator, ValidatorSet

GENESIS_FILE = "genesis.json"

HexKey = Annotated[str, pydantic.Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, pydantic.Field(min_length=1, max_length=64)]
KindName = Literal["hospital", "trusted_party", "lab", "pharmacy", "clinic", "auditor"]


class ValidatorEntry(StrictModel):
    name: Name
    public_key: HexKey
    node_id: str
    power: Annotated[int, pydantic.Field(ge=1, le=2**32)] = 10

    @pydantic.field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        try:
            public_key_from_peer_id(value)
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        return value


class InstitutionEntry(StrictModel):
    name: Name
    kind: KindName
    public_key: HexKey


class DataTypeEntry(StrictModel):
    name: Annotated[str, pydantic.Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    title: Annotated[str, pydantic.Field(min_length=1, max_length=128)]
    fhir_resource: Annotated[str, pydantic.Field(min_length=1, max_length=64)]
    loinc_codes: list[Annotated[str, pydantic.Field(pattern=r"^\d{1,8}-\d$")]] = pydantic.Field(
        default_factory=list, max_length=8
    )


_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(ConsensusParams))


class GenesisFile(StrictModel):
    chain_id: Annotated[str, pydantic.Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    genesis_time: str
    validators: Annotated[list[ValidatorEntry], pydantic.Field(min_length=1, max_length=128)]
    governance_threshold: Annotated[int, pydantic.Field(ge=1)] | None = None
    institutions: list[InstitutionEntry] = pydantic.Field(default_factory=list)
    params: dict[str, int] = pydantic.Field(default_factory=dict)
    data_types: list[DataTypeEntry] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("genesis_time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time_ms(value)
        return value

    @pydantic.field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(_PARAM_NAMES))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {list(_PARAM_NAMES)}")
        return value

    @pydantic.model_validator(mode="after")
    def _unique(self) -> GenesisFile:
        _no_duplicates("validators", [(v.name, v.public_key, v.node_id) for v in self.validators])
        _no_duplicates("institutions", [(i.name, i.public_key) for i in self.institutions])
        if self.governance_threshold is not None and self.governance_threshold > len(
            self.validators
        ):
            raise ValueError(
                f"governance_threshold {self.governance_threshold} exceeds the "
                f"{len(self.validators)} validators"
            )
        return self


def _no_duplicates(section: str, rows: list[tuple[str, ...]]) -> None:
    for column in range(len(rows[0]) if rows else 0):
        seen: dict[str, int] = {}
        for index, row in enumerate(rows):
            if row[column] in seen:
                raise ValueError(
                    f"{section}[{index}] repeats {row[column]!r} of {section}[{seen[row[column]]}]"
                )
            seen[row[column]] = index


def parse_time_ms(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected an RFC 3339 time such as 2026-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("the time needs a timezone, for example a trailing Z")
    return int(moment.timestamp() * 1000)


def format_time_ms(time_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def genesis_from_file(model: GenesisFile, path: Path | str) -> Genesis:
    validators = ValidatorSet.of(
        [
            Validator(
                v.name, bytes.fromhex(v.public_key), public_key_from_peer_id(v.node_id), v.power
            )
            for v in model.validators
        ]
    )
    genesis = Genesis(
        chain_id=model.chain_id,
        genesis_time_ms=parse_time_ms(model.genesis_time),
        validators=validators,
        governance_threshold=model.governance_threshold
        or default_governance_threshold(len(model.validators)),
        institutions=tuple(
            Institution(i.name, InstitutionKind[i.kind.upper()], bytes.fromhex(i.public_key))
            for i in model.institutions
        ),
        params=ConsensusParams(**model.params),
        extra_data_types=tuple(
            DataType(d.name, d.title, d.fhir_resource, tuple(d.loinc_codes))
            for d in model.data_types
        ),
    )
    try:
        genesis.to_wire()  # checks every bound of the canonical record
    except EncodeError as exc:
        raise ConfigError(path, [exc.message.replace("Genesis.", "", 1)]) from None
    try:
        data_type_registry(genesis.extra_data_types)
    except ValueError as exc:
        raise ConfigError(path, [f"data_types: {exc}"]) from None
    return genesis


def parse_genesis(data: Any, path: Path | str) -> Genesis:
    return genesis_from_file(validate(GenesisFile, data, path), path)


def load_genesis(path: Path) -> Genesis:
    return parse_genesis(read_json(path), path)


def genesis_to_json(genesis: Genesis) -> str:
    document = {
        "chain_id": genesis.chain_id,
        "genesis_time": format_time_ms(genesis.genesis_time_ms),
        "validators": [
            {
                "name": v.name,
                "public_key": v.public_key.hex(),
                "node_id": peer_id(v.node_key),
                "power": v.power,
            }
            for v in genesis.validators.validators
        ],
        "governance_threshold": genesis.governance_threshold,
        "institutions": [
            {"name": i.name, "kind": i.kind.name.lower(), "public_key": i.public_key.hex()}
            for i in genesis.institutions
        ],
        "params": dataclasses.asdict(genesis.params),
        "data_types": [
            {
                "name": d.name,
                "title": d.title,
                "fhir_resource": d.fhir_resource,
                "loinc_codes": list(d.loinc_codes),
            }
            for d in genesis.extra_data_types
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def save_genesis(path: Path, genesis: Genesis) -> None:
    write_atomic(path, genesis_to_json(genesis))


__all__ = [
    "GENESIS_FILE",
    "ConfigError",
    "GenesisFile",
    "InvalidInput",
    "format_time_ms",
    "genesis_to_json",
    "load_genesis",
    "parse_genesis",
    "parse_time_ms",
    "save_genesis",
]

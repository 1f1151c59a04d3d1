"""Every key layout in the store, in one place.

    m<name>                    store metadata (schema version, state height, accumulator)
    s<table:1><key>            ledger state entry (consensus.ledger.state.Table)

Later layouts (blocks, certificates, transaction index, head) are added here too, never
spelled out elsewhere.
"""

from __future__ import annotations

from typing import Final

from carechain.consensus.ledger.state import Table

SCHEMA_VERSION: Final = 1

META_PREFIX: Final = b"m"
STATE_PREFIX: Final = b"s"

SCHEMA_VERSION_KEY: Final = META_PREFIX + b"schema_version"
STATE_HEIGHT_KEY: Final = META_PREFIX + b"state_height"
ACCUMULATOR_KEY: Final = META_PREFIX + b"state_accumulator"


def state_key(table: Table, key: bytes) -> bytes:
    return STATE_PREFIX + bytes([table]) + key


def state_table_prefix(table: Table) -> bytes:
    return STATE_PREFIX + bytes([table])


def parse_state_key(raw: bytes) -> tuple[Table, bytes]:
    if len(raw) < 2 or raw[:1] != STATE_PREFIX:
        raise ValueError(f"{raw[:8].hex()} is not a state key")
    return Table(raw[1]), raw[2:]

"""Every key layout in the store, in one place.

    m<name>                    store metadata (schema version, state height, head, pruning)
    s<table:1><key>            ledger state entry (consensus.ledger.state.Table)
    n<version:8><path>         a state tree node written at that height (path: a nibble a byte)
    r<height:8>                the state tree's root reference at that height
    x<height:8>                the tree nodes the tree of that height no longer holds (each
                               version:8, path length:1, path)
    b<height:8>                block (canonical encoding)
    c<height:8>                the block's commit certificate
    h<block hash:32>           height of a block hash
    t<tx id:32>                height:8 and position:4 of a committed transaction
    p<tx id:32>                a partial transaction waiting for co-signatures, and when seen

No other module spells out a key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from carechain.consensus.ledger.state import Table

# 2: a record's content id is a canonical CIDv1 and a large blob is named by its UnixFS root
# (ids equal to IPFS's); a chain written under 1 may hold ids this ledger refuses.
# 3: key-loss recovery (the recovery kinds, the RECOVERY and PATIENT_KEY tables, genesis's
# recovery_delay_ms): a registration now also indexes its keys, so a chain written under 2
# replays to other state roots.
# 4: a revoked institution loses its powers (its signatures count for no policy but
# governance's, it reads by no right or grant, epochs are sealed without it); institutions
# rotate their keys (INSTITUTION_KEY); patients have guardians (GUARDIAN_OF, the account's
# guardians and minor); a recovery's finish may defer past epochs to epoch.share: a chain
# written under 3 may hold transactions this refuses, and replays to other state.
# 5: the state root is the root of an authenticated tree (consensus/ledger/state_tree.py),
# not a multiset hash: every header's state_root differs from what 4 wrote.
# 6: a vault's grants and emergencies are listed in VAULT_INDEX and its records numbered in
# VAULT_RECORD, so a light client can check an answer is complete: a chain written under 5
# replays to other state roots.
SCHEMA_VERSION: Final = 6

META_PREFIX: Final = b"m"
STATE_PREFIX: Final = b"s"

SCHEMA_VERSION_KEY: Final = META_PREFIX + b"schema_version"
STATE_HEIGHT_KEY: Final = META_PREFIX + b"state_height"
TREE_PRUNED_KEY: Final = META_PREFIX + b"tree_pruned"  # the last stale height pruned

TREE_NODE_PREFIX: Final = b"n"
TREE_ROOT_PREFIX: Final = b"r"
TREE_STALE_PREFIX: Final = b"x"


BLOCK_PREFIX: Final = b"b"
CERTIFICATE_PREFIX: Final = b"c"
BLOCK_HASH_PREFIX: Final = b"h"
TX_PREFIX: Final = b"t"
PARTIAL_PREFIX: Final = b"p"
LATE_PREFIX: Final = b"l"  # precommits that came after a height's certificate was made
HEAD_KEY: Final = META_PREFIX + b"head"  # height:8 + block hash:32


def block_key(height: int) -> bytes:
    return BLOCK_PREFIX + height.to_bytes(8, "big")


def certificate_key(height: int) -> bytes:
    return CERTIFICATE_PREFIX + height.to_bytes(8, "big")


def late_key(height: int) -> bytes:
    return LATE_PREFIX + height.to_bytes(8, "big")


def block_hash_key(block_hash: bytes) -> bytes:
    return BLOCK_HASH_PREFIX + block_hash


def tx_key(tx_id: bytes) -> bytes:
    return TX_PREFIX + tx_id


def partial_key(tx_id: bytes) -> bytes:
    return PARTIAL_PREFIX + tx_id


def encode_head(height: int, block_hash: bytes) -> bytes:
    return height.to_bytes(8, "big") + block_hash


def decode_head(raw: bytes) -> tuple[int, bytes]:
    if len(raw) != 40:
        raise ValueError(f"head pointer is {len(raw)} bytes, expected 40")
    return int.from_bytes(raw[:8], "big"), raw[8:]


def encode_tx_location(height: int, position: int) -> bytes:
    return height.to_bytes(8, "big") + position.to_bytes(4, "big")


def decode_tx_location(raw: bytes) -> tuple[int, int]:
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:12], "big")


def tree_node_key(version: int, path: bytes) -> bytes:
    return TREE_NODE_PREFIX + version.to_bytes(8, "big") + path


def tree_root_key(height: int) -> bytes:
    return TREE_ROOT_PREFIX + height.to_bytes(8, "big")


def tree_stale_key(stale_since: int) -> bytes:
    return TREE_STALE_PREFIX + stale_since.to_bytes(8, "big")


def encode_stale(nodes: Iterable[tuple[int, bytes]]) -> bytes:
    """The node keys (version, path) of one height's stale index entry."""
    return b"".join(
        version.to_bytes(8, "big") + bytes((len(path),)) + path for version, path in nodes
    )


def decode_stale(raw: bytes) -> list[tuple[int, bytes]]:
    nodes = []
    offset = 0
    while offset < len(raw):
        if offset + 9 > len(raw) or offset + 9 + raw[offset + 8] > len(raw):
            raise ValueError("a stale tree index entry is cut short")
        end = offset + 9 + raw[offset + 8]
        nodes.append((int.from_bytes(raw[offset : offset + 8], "big"), raw[offset + 9 : end]))
        offset = end
    return nodes


def state_key(table: Table, key: bytes) -> bytes:
    return STATE_PREFIX + bytes([table]) + key


def state_table_prefix(table: Table) -> bytes:
    return STATE_PREFIX + bytes([table])


def parse_state_key(raw: bytes) -> tuple[Table, bytes]:
    if len(raw) < 2 or raw[:1] != STATE_PREFIX:
        raise ValueError(f"{raw[:8].hex()} is not a state key")
    return Table(raw[1]), raw[2:]

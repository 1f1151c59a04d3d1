"""A simulated validator: the real engine and ledger application on an in-memory store and
WAL, driven by a shell that performs the engine's actions the way the node does."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.state import StateDiff, Table
from carechain.consensus.poa.application import LedgerApplication
from carechain.consensus.poa.engine import Engine
from carechain.consensus.poa.events import WalReplayed
from carechain.consensus.poa.messages import WalRecord
from carechain.consensus.poa.state import EngineConfig
from carechain.consensus.types import Block, BlockHeader, CommitCertificate, Tx
from carechain.storage.kv import MemoryKV
from carechain.storage.state import StateStore


class SimChain:
    """Committed blocks and state of one node; the `ChainView` its application reads."""

    def __init__(self, genesis: Genesis) -> None:
        self.store = StateStore(MemoryKV())
        self.store.initialize(genesis)
        self.blocks: list[Block] = []
        self.certificates: list[CommitCertificate] = []

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self.store.get(table, key)

    @property
    def height(self) -> int:
        return self.store.height

    def root_after(self, diff: StateDiff) -> bytes:
        return self.store.root_after(diff)

    def last_header(self) -> BlockHeader | None:
        return self.blocks[-1].header if self.blocks else None

    def last_certified(self) -> tuple[Block, CommitCertificate] | None:
        return (self.blocks[-1], self.certificates[-1]) if self.blocks else None


@dataclasses.dataclass
class SimNode:
    name: str
    key: PrivateKey
    genesis: Genesis
    config: EngineConfig
    byzantine: bool = False
    engine_factory: Callable[..., Engine] = Engine
    chain: SimChain = dataclasses.field(init=False)
    mempool: dict[bytes, Tx] = dataclasses.field(default_factory=dict)
    wal: list[WalRecord] = dataclasses.field(default_factory=list)
    alive: bool = True
    engine: Engine = dataclasses.field(init=False)
    app: LedgerApplication = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.chain = SimChain(self.genesis)
        self.boot()

    def pending(self) -> Iterable[Tx]:
        return list(self.mempool.values())

    def boot(self) -> None:
        """A fresh engine over the committed chain (a start or a restart)."""
        self.app = LedgerApplication(self.genesis, self.chain, self.pending)
        self.engine = self.engine_factory(self.config, self.app, self.key)
        current = self.chain.height + 1
        self.engine.handle(WalReplayed(tuple(r for r in self.wal if r.height == current)))

    def commit(self, block: Block, certificate: CommitCertificate) -> None:
        diff = self.app.executed(block)
        self.chain.store.apply(diff, block.header.height)
        self.chain.blocks.append(block)
        self.chain.certificates.append(certificate)
        for tx in block.txs:
            self.mempool.pop(tx.id, None)
        self.wal = [r for r in self.wal if r.height > block.header.height]  # rotate per height

"""What this validator may sign and send: its signing history and the WAL records that guard it.

A validator whose data folder was lost signs nothing until the chain has moved past every
height it could have signed at before the loss; a validator whose WAL record could not be
written sends nothing that record guards and signs nothing more until it is restarted. Both
hold the engine back through `Engine.sign_from_height`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from carechain.consensus.errors import CarechainError
from carechain.consensus.poa.engine import Engine
from carechain.consensus.poa.events import WriteWal
from carechain.consensus.poa.messages import Proposal, WalKind
from carechain.consensus.types import Block, Vote
from carechain.storage.wal import ConsensusWal

log = logging.getLogger("carechain.node")

SIGNING_HELD: Final = 2**62  # a height no chain reaches


class SigningGuard:
    def __init__(
        self, engine: Engine, wal: ConsensusWal, data: Path, started_ms: int, drift_ms_max: int
    ) -> None:
        self.engine = engine
        self.wal = wal
        self.data = data
        self.started_ms = started_ms
        self.drift_ms_max = drift_ms_max
        self.wal_failures = 0  # WAL records that could not be written (their messages not sent)
        self.unlogged: set[tuple[WalKind, int, int]] = set()  # their (kind, height, round)

    def check_history(self, signs: bool, height: int) -> None:
        """A validator that finds neither a block nor the WAL's NEVER_SIGNED marker lost its
        data folder, and with it the record of what it signed: signing at a height it signed
        before the loss could make it equivocate. It follows the chain without signing until
        it holds a certified block proposed after it started (time after our start + the
        drift bound); every height it could have signed at is then committed. A data folder
        lost before the network's first block is the one case this cannot see (the WAL's
        marker is gone but so is every block)."""
        if signs and height == 0 and not self.wal.never_signed and not self.wal.records():
            self.engine.sign_from_height = SIGNING_HELD
            log.warning(
                "no blocks and no signing history in %s: this validator signs nothing until "
                "the chain has committed a block proposed after it started",
                self.data,
            )
        elif height > 0:
            self.wal.forget_never_signed()

    @property
    def held(self) -> bool:
        """Whether this validator withholds its signature (see `check_history`)."""
        return self.engine.sign_from_height == SIGNING_HELD

    def committed(self, block: Block) -> None:
        """After a commit: the WAL starts the next height, and a validator held back since it
        lost its history signs again once a block proposed after it started is committed."""
        height = block.header.height
        self.wal.rotate(height + 1)
        self.wal.forget_never_signed()
        if (
            self.held
            and not self.wal_failures
            and block.header.time_ms > self.started_ms + self.drift_ms_max
        ):
            self.engine.sign_from_height = height + 1
            log.warning("height %d was proposed after this node started: signing again", height)

    def write(self, action: WriteWal) -> bool:
        """Append a WAL record; False (logged and counted, never fatal) if it cannot be.

        What the record guards must then never leave this node, now or when the engine
        re-sends its own messages a second later: its (kind, height, round) is remembered
        and every later send of a proposal or vote of that slot is dropped. And the engine
        holds what it signed in memory only, so after a restart it could sign a different
        proposal or vote against a lock it lost: this validator signs nothing more until it
        is restarted (the others go on without it)."""
        try:
            self.wal.append(action.record)
        except CarechainError as exc:
            record = action.record
            self.wal_failures += 1
            self.unlogged.add((record.kind, record.height, record.round))
            self.engine.sign_from_height = SIGNING_HELD
            log.error(
                "a WAL record could not be written (%s): what it guards is not sent, and "
                "this validator signs nothing more until it is restarted",
                exc,
            )
            return False
        return True

    def unlogged_message(self, message: object) -> bool:
        """A proposal or vote of a slot whose WAL record could not be written."""
        if isinstance(message, Proposal):
            return (WalKind.PROPOSAL, message.height, message.round) in self.unlogged
        if isinstance(message, Vote):
            return (WalKind.VOTE, message.height, message.round) in self.unlogged
        return False

"""Sync a chain as a read-only observer, for an auditor's replay.

An auditor holds a node key of its own; a hospital admits it by listing that key's peer id
under `p2p.observers`. The observer streams every block with its certificate from the peer
(`RANGE_MAX` heights per stream) and keeps them in memory; it checks only that heights come in
order. It trusts nothing else the peer sent: `node.audit.replay` then verifies every
certificate, link, signature, policy and state root against the auditor's own genesis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.poa.messages import Commit
from carechain.node.audit.archive import CommitsSource
from carechain.node.sync import ITEM_BYTES_MAX, RANGE_MAX
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.p2p.network import Network, PeerError

CONNECT_TIMEOUT_S = 15.0


class ObserverError(InvalidInput):
    code = "observer_sync_failed"


async def fetch_commits(
    network: Network, peer: str, progress: Callable[[int], None] | None = None
) -> CommitsSource:
    """Every block the (connected) `peer` has, with its certificate, from height 1."""
    commits: list[Commit] = []
    while True:
        first = len(commits) + 1
        try:
            async for item in network.request_range(peer, first, first + RANGE_MAX - 1):
                try:
                    commit = Commit.decode(item, max_bytes=ITEM_BYTES_MAX)
                except CarechainError as exc:
                    raise ObserverError(f"{peer} sent an unreadable block: {exc}") from None
                expected = len(commits) + 1
                if commit.block.header.height != expected:
                    raise ObserverError(
                        f"{peer} sent height {commit.block.header.height}, expected {expected}"
                    )
                commits.append(commit)
        except PeerError as exc:
            raise ObserverError(
                f"syncing from {peer} failed at height {len(commits) + 1}: {exc}",
                hint="is this key's peer id listed under p2p.observers in the node's config?",
            ) from None
        if len(commits) < first:  # the peer has nothing past what we hold
            break
        if progress is not None:
            progress(len(commits))
    return CommitsSource(commits)


async def observe(
    key: PrivateKey,
    address: str,
    progress: Callable[[int], None] | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> CommitsSource:
    """Connect over libp2p to the node at `address` (`/ip4/H/tcp/P/p2p/ID`) and fetch its chain."""
    peer = address.rsplit("/p2p/", 1)[1]
    network = Libp2pNetwork(key, "/ip4/127.0.0.1/tcp/0", dial=[address], allowed={peer})
    await network.start()
    try:
        deadline = time.monotonic() + connect_timeout_s
        while peer not in network.peers():
            if time.monotonic() > deadline:
                raise ObserverError(
                    f"could not connect to {address} within {connect_timeout_s:.0f}s",
                    hint="check the address, and that the node lists this key's peer id "
                    "under p2p.observers",
                )
            await asyncio.sleep(0.05)
        return await fetch_commits(network, peer, progress)
    finally:
        await network.stop()

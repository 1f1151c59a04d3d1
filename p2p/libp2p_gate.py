"""Who may hold a connection to this node, and how: the libp2p host's transports, the Noise
transport that refuses any peer outside the registered set, and the TCP options that let the
kernel close a connection stalled by a silent network cut.

What py-libp2p 0.8.1 does by default, and why `gated_host` overrides it (DESIGN.md section 6):
plaintext and secio are accepted, so only Noise is offered; dials wait 250 ms unless
`max_connections_per_peer=1`; there is no peer allow-list, so our Noise transport refuses
any peer outside the registered set right after the handshake, in both directions.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, Protocol

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_pair
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport

from carechain.p2p.network import PeerError

STALL_TIMEOUT_S: Final = 5

log = logging.getLogger("carechain.p2p")


UNREGISTERED: Final = (
    "is not registered on this chain: no validator, admitted node or observer here has this "
    "peer id (a node of another chain looks the same)"
)


class Admission(Protocol):
    """What the gate asks of the network: why a peer is refused (None: it is admitted), and a
    count of those refused by cause (`Libp2pNetwork` is one)."""

    refused_by: Counter[str]

    def refusal(self, remote: str) -> tuple[str, str] | None: ...


def refusal(
    allowed: frozenset[str],
    banned_until: Mapping[str, float],
    ban_reasons: Mapping[str, str],
    remote: str,
) -> tuple[str, str] | None:
    """Why `remote` may not connect, as (cause, what to tell the operator), or None. Causes:
    "unregistered", "banned" (for a while, for what it did; `banned_until` is monotonic)."""
    if remote not in allowed:
        return "unregistered", UNREGISTERED
    left_s = banned_until.get(remote, 0.0) - time.monotonic()
    if left_s > 0:
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=left_s)
        reason = ban_reasons.get(remote, "it misbehaved")
        return "banned", f"is banned until {until:%H:%M:%S} UTC: {reason}"
    return None


class GatedNoise(NoiseTransport):
    """Noise that refuses, right after the handshake, any peer outside the allowed set."""

    def __init__(self, network: Admission, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = network

    async def _gate(self, secured: Any) -> Any:
        remote = str(secured.get_remote_peer())
        refused = self.network.refusal(remote)
        if refused is not None:
            cause, why = refused
            log.warning("refused peer %s: it %s", remote, why)
            self.network.refused_by[cause] += 1  # after the log line: a reader of one sees both
            await secured.close()
            raise PeerError(f"peer {remote} {why}")
        return secured

    async def secure_inbound(self, conn: Any) -> Any:
        bound_stalls(conn)
        return await self._gate(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: Any, remote: Any) -> Any:
        bound_stalls(conn)
        return await self._gate(await super().secure_outbound(conn, remote))


def bound_stalls(conn: Any) -> None:
    """Let the kernel close a TCP connection whose data goes unacknowledged for
    STALL_TIMEOUT_S, or that stays silent through the keepalive probes. Without this a
    connection across a silent network cut (a pulled cable, a blackhole route) lives on and,
    after the cut heals, waits out TCP's exponential retransmission backoff (seen: 13 s after
    a 14 s cut) before it carries anything; closed, it is redialled within a second."""
    sock = getattr(getattr(getattr(conn, "stream", None), "stream", None), "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):  # options missing off Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, STALL_TIMEOUT_S * 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def gated_host(network: Admission, seed: bytes) -> Any:
    """A libp2p host with the Ed25519 identity of `seed`: TCP, Noise gated by `network`,
    Yamux, one connection per peer."""
    key_pair = create_new_key_pair(seed)
    security = {
        NOISE_PROTOCOL: GatedNoise(network, key_pair, noise_privkey=new_x25519_pair().private_key)
    }
    return new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )

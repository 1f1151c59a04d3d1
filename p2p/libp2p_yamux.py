"""The libp2p adapter's streams under Yamux flow control: how much one read takes, how far a
peer has sent past the receive window it was granted, and writes that wait for the peer's
window to open instead of giving up.

Yamux flow control: py-libp2p by default returns receive credit after every read (one
encrypted WINDOW_UPDATE frame and a socket write per message read); under load a validator
spent about 7% of its time there. `PY_YAMUX_RELEASE_ON_READ=0` (py-libp2p's own knob, set here
unless the environment sets it) returns credit as go-yamux does, in batches of half the window.
"""

from __future__ import annotations

import os
from typing import Any, Final

import trio

from carechain.p2p.network import PeerError

os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")  # read at call time by py-libp2p

YAMUX_WINDOW_MAX_BYTES: Final = 16 * 1024 * 1024  # py-libp2p's largest Yamux receive window
READ_BYTES: Final = 256 * 1024


def unread_and_window(stream: Any) -> tuple[int, int]:
    """Bytes py-libp2p's Yamux holds for `stream` unread, and the receive window it grants
    the peer (it grows from 256 KiB to 16 MiB as the stream is read): a peer that honours
    the window never has more than that unread. (0 bytes if the stream is not Yamux.)"""
    muxed: Any = getattr(stream, "muxed_stream", None)
    window = getattr(muxed, "target_recv_window", YAMUX_WINDOW_MAX_BYTES)
    buffers = getattr(getattr(muxed, "conn", None), "stream_buffers", None)
    if not isinstance(buffers, dict) or not isinstance(window, int):
        return 0, YAMUX_WINDOW_MAX_BYTES
    return len(buffers.get(getattr(muxed, "stream_id", None), b"")), window


async def write_within_window(stream: Any, data: bytes) -> None:
    """Write `data` no faster than the peer's Yamux window opens. py-libp2p's own write gives
    up, and the stream with it, after 5 s of a closed window; a node that holds back a peer's
    transactions (their credit ran out while its mempool is full) keeps the window closed
    for as long as that lasts, and the sender must wait, not drop the stream and what it
    carried."""
    muxed: Any = getattr(stream, "muxed_stream", None)
    if not isinstance(getattr(muxed, "send_window", None), int):
        await stream.write(data)
        return
    sent = 0
    while sent < len(data):
        while muxed.send_window <= 0:
            if muxed.closed or muxed.send_closed:
                raise PeerError("the stream closed while its window was shut")
            await trio.sleep(0.01)
        size = min(len(data) - sent, muxed.send_window)
        await stream.write(data[sent : sent + size])
        sent += size

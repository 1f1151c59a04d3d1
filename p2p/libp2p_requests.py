"""The libp2p adapter's request streams, block sync (`SYNC`) and blobs (`BLOBS`), on the trio
side: the asking side sends one frame and hands what comes back to an asyncio queue in
batches; the serving side pulls what it sends from a provider on the asyncio side in batches.
An empty frame (`END`) ends the answer, and an error frame (tag 1) ends it with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from carechain.p2p.libp2p_yamux import READ_BYTES
from carechain.p2p.network import FrameReader, PeerError, RangeProvider, encode_frame

SYNC: Final = TProtocol("/carechain/sync/1")
BLOBS: Final = TProtocol("/carechain/blob/1")
END: Final = b""


async def client(
    host: Any,
    loop: asyncio.AbstractEventLoop | None,
    frame_bytes_max: int,
    remote: str,
    protocol: TProtocol,
    request: bytes,
    queue: asyncio.Queue[Any],
) -> None:
    """Ask `remote` on `host` and put what it answers into `queue` (on `loop`): lists of items,
    then None at the end, or the error that ended the request."""

    async def put(item: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)  # type: ignore[arg-type]
        await trio.to_thread.run_sync(future.result)

    try:
        with trio.fail_after(60):
            stream = await host.new_stream(ID.from_base58(remote), [protocol])
            await stream.write(encode_frame(0, request))
        reader = FrameReader(frame_bytes_max)
        while True:
            with trio.fail_after(60):
                data = await stream.read(READ_BYTES)
            if not data:
                raise PeerError(f"the stream from {remote} broke before its end")
            frames = reader.feed(data)
            items = [payload for _, payload in frames]
            if frames and frames[-1][0] == 1:  # an error frame ends the stream
                raise PeerError(f"{remote} refused: {items[-1].decode(errors='replace')}")
            if items and items[-1] == END:
                await put(items[:-1])
                await put(None)
                return
            if items:
                await put(items)
    except Exception as exc:
        error = (
            exc if isinstance(exc, PeerError) else PeerError(f"request to {remote} failed: {exc!r}")
        )
        await put(error)


async def serve(
    loop: asyncio.AbstractEventLoop | None,
    stream: Any,
    provider: Callable[[str, bytes], AsyncIterator[bytes]] | None,
) -> None:
    """Answer the request on `stream` with what `provider` (run on `loop`) yields for it."""
    remote = str(stream.muxed_conn.peer_id)
    reader = FrameReader(64 * 1024)
    frames: list[tuple[int, bytes]] = []
    try:
        with trio.fail_after(30):
            while not frames:
                data = await stream.read(READ_BYTES)
                if not data:
                    return
                frames = reader.feed(data)
        if provider is None:
            raise PeerError("this node does not serve that")
        items = provider(remote, frames[0][1])
        while True:
            future = asyncio.run_coroutine_threadsafe(_pull(items, 64), loop)  # type: ignore[arg-type]
            batch, done = await trio.to_thread.run_sync(future.result)
            if batch:
                await stream.write(b"".join(encode_frame(0, item) for item in batch))
            if done:
                break
        await stream.write(encode_frame(0, END))
    except Exception as exc:
        with contextlib.suppress(Exception):
            await stream.write(encode_frame(1, str(exc).encode()[:1000]))
    finally:
        with contextlib.suppress(Exception):
            await stream.close()


async def serve_sync(
    loop: asyncio.AbstractEventLoop | None, stream: Any, provider: RangeProvider | None
) -> None:
    """Answer a sync request (two 8-byte heights) with the blocks `provider` yields."""

    def ranges(remote: str, request: bytes) -> AsyncIterator[bytes]:
        if provider is None or len(request) != 16:
            raise PeerError("a sync request is two 8-byte heights")
        first, last = struct.unpack(">QQ", request)
        return provider(remote, first, last)

    await serve(loop, stream, ranges)


async def _pull(items: AsyncIterator[bytes], count: int) -> tuple[list[bytes], bool]:
    """Up to `count` items (on the asyncio side), and whether the iterator is finished."""
    batch: list[bytes] = []
    try:
        while len(batch) < count:
            batch.append(await anext(items))
    except StopAsyncIteration:
        return batch, True
    return batch, False

"""Serving and fetching record blobs between hospitals.

A reader asks another hospital's node for a record's blob with a `BlobRequest` it signs; the
serving node checks it against committed chain state (`consensus.ledger.blob_access`) before
sending a byte. The reader checks every chunk against the content id as it arrives; it then
anchors an `access.receipt` on chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from carechain.consensus.crypto import stream_ciphertext_bytes
from carechain.consensus.errors import CarechainError
from carechain.consensus.ledger.blob_access import BlobAccessDenied, BlobRequest, authorise
from carechain.consensus.ledger.state import StateReader
from carechain.p2p.network import Network
from carechain.storage.blobs.store import BlobCorruptError, BlobStore, content_id_of


class BlobService:
    def __init__(
        self, state: StateReader, chain_id: str, blobs: BlobStore, clock_ms: Callable[[], int]
    ) -> None:
        self.state = state
        self.chain_id = chain_id
        self.blobs = blobs
        self.clock_ms = clock_ms
        self.served = 0
        self.refused = 0

    async def serve(self, remote: str, raw: bytes) -> AsyncIterator[bytes]:
        try:
            request = BlobRequest.decode(raw, max_bytes=4096)
        except CarechainError as exc:
            self.refused += 1
            raise BlobAccessDenied(f"malformed blob request: {exc}") from None
        try:
            entry = authorise(self.state, self.chain_id, request, self.clock_ms())
        except BlobAccessDenied:
            self.refused += 1
            raise
        self.served += 1
        size = stream_ciphertext_bytes(entry.size_bytes)
        async for piece in self.blobs.get(request.content_id, size=size):
            yield piece


async def fetch_from_peer(
    network: Network, peer: str, request: BlobRequest, size_bytes: int
) -> bytes:
    """Fetch a record's ciphertext from another node; refuse it unless it is the one byte
    string the record's content id names, of the length its size on chain gives
    (`size_bytes`: the ciphertext's; never trust the serving node's own check)."""
    pieces, received = [], 0
    stream = network.fetch_blob(peer, request.encode())
    try:
        async for piece in stream:
            received += len(piece)
            if received > size_bytes:
                break  # more than the record's ciphertext: stop reading, refuse below
            pieces.append(piece)
    finally:
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            await closing()
    data = b"".join(pieces)
    if received != size_bytes:
        raise BlobCorruptError(
            f"{peer} sent {received:,}{'+' if received > size_bytes else ''} bytes for "
            f"{request.content_id}; the record's are {size_bytes:,}"
        )
    if content_id_of(data) != request.content_id:
        raise BlobCorruptError(f"{peer} sent bytes that do not match {request.content_id}")
    return data

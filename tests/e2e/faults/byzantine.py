"""A Byzantine validator process for fault scenario 9: the real node, run from its home with
its real keys and network identity, that besides every vote it signs sends a conflicting vote
(equivocation), a vote for a far height, a vote with a broken signature, bytes that are no
message at all, a vote from a key that is no validator, and now and then a frame larger
than any node accepts.

Run as `python -m carechain.tests.e2e.faults.byzantine --home HOME`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import itertools
import signal
from pathlib import Path

import uvloop

from carechain.config.node import parse_host_port
from carechain.consensus.crypto import PrivateKey
from carechain.consensus.poa.events import Action, Broadcast
from carechain.consensus.poa.messages import encode_message
from carechain.consensus.types import Vote
from carechain.node.api.app import Api, serve
from carechain.node.daemon import Node
from carechain.node.runner import API_ADDRESS_FILE, build_node, configure_logging
from carechain.p2p.network import Topic

STRANGER = PrivateKey(b"\x66" * 32)  # a key no genesis lists


def misbehave(node: Node) -> None:
    key = node.engine.key
    assert key is not None, "a Byzantine validator needs its validator key"
    honest = node._perform
    counter = itertools.count()

    async def perform(actions: list[Action]) -> None:
        await honest(actions)
        for action in actions:
            if isinstance(action, Broadcast) and isinstance(action.message, Vote):
                for junk in _junk(action.message, key, next(counter), node):
                    await node.network.broadcast(Topic.CONSENSUS, junk)

    node._perform = perform  # type: ignore[method-assign]


def _junk(vote: Vote, key: PrivateKey, count: int, node: Node) -> list[bytes]:
    other = hashlib.sha256(vote.block_hash + count.to_bytes(8, "big")).digest()
    conflicting = dataclasses.replace(vote, block_hash=other, signature=b"").signed_by(key)
    far = dataclasses.replace(vote, height=vote.height + 1000, signature=b"").signed_by(key)
    broken = dataclasses.replace(vote, signature=bytes(64))
    stranger = dataclasses.replace(vote, validator=STRANGER.public_key, signature=b"").signed_by(
        STRANGER
    )
    junk = [
        encode_message(conflicting),
        encode_message(far),
        encode_message(broken),
        encode_message(stranger),
        b"\xc1" + bytes(count % 64),
    ]
    if count % 25 == 24:
        junk.append(b"\x00" * (node.config.p2p.message_bytes_max + 1))
    return junk


async def main(home: Path) -> None:
    node = build_node(home, None)
    configure_logging(node.config)
    misbehave(node)
    host, port = parse_host_port(node.config.api.listen)
    runner = await serve(Api(node), host, port)
    bound = runner.addresses[0]
    (home / "data" / API_ADDRESS_FILE).write_text(f"http://{bound[0]}:{bound[1]}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await node.run(stop)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True)
    uvloop.run(main(parser.parse_args().home))

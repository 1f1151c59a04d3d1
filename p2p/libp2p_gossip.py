"""GossipSub as the libp2p adapter runs it: the router's tuning, message ids by content, the
topic validators that ask the node on the asyncio side, and the subscriptions' queues.

GossipSub, which carries transactions and committed blocks to non-validator nodes, is tuned
(`gossipsub`): its spam protection (10 messages/s per peer and topic, silently dropped beyond)
and its eclipse protection (a mesh needs 3 distinct IPs, so hosts on one address never form one)
are off, our own per-peer limits and permission gate stand in their place; the per-peer outbound
queue grows from 32 to `OUTBOX_MAX` RPCs; the heartbeat runs every second, not every 120 s, so a
mesh forms at once; the message id is the content hash, so duplicates are dropped by a set
lookup before any validation. Validation runs in the topic validator: it hands the message to
the node on the asyncio side, which checks and takes it in one step, and only what it accepts
is forwarded.

Messages follow the pubsub specification's StrictNoSign policy, which js-libp2p and go-libp2p
implement: no `from`, no `seqno`, no `signature`, no `key`, and a message carrying any of them
is refused. Every payload carries its own signatures (transaction signatures, a block's commit
certificate) that the node's handler checks, so an envelope signature would add only an
Ed25519 check per message per hop. py-libp2p 0.8.1 has no such mode (with
`strict_signing=False` it still stamps `from` and `seqno`, which other implementations refuse as
`seqno_present`), so the adapter publishes through `publish_unsigned`, and `_Gossip` keys two
structures py-libp2p keys by `from + seqno` by the message id instead: the message cache (from
which IHAVE gossip is announced and IWANT answered: under `from + seqno` it announced ids no
other implementation, nor our own seen-cache, knows) and the equivocation check (which, every
message having the same empty `from + seqno`, would drop all but the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from libp2p.peer.id import ID
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from carechain.p2p.network import GossipHandler, Topic, Verdict, message_id

# Also the bound of the adapter's own per-peer send queues and of its command queue.
OUTBOX_MAX: Final = 4096
TOPIC_NAMES: Final = {
    Topic.TX: "/carechain/tx/1",
    Topic.PARTIAL: "/carechain/partial/1",
    Topic.BLOCK: "/carechain/block/1",
}

log = logging.getLogger("carechain.p2p")


class _LargeRpcQueue(RpcQueue):
    """GossipSub's per-peer outbound queue, which holds 32 RPCs by default and drops beyond."""

    def __init__(self, max_size: int = OUTBOX_MAX, **kwargs: Any) -> None:
        super().__init__(max_size, **kwargs)


# py-libp2p builds each peer's queue with `RpcQueue()` and takes no size: the class it uses is
# replaced here (only this package imports libp2p, so nothing else sees the change).
setattr(pubsub_module, "RpcQueue", _LargeRpcQueue)  # noqa: B010


TOPICS_BY_NAME: Final = {name: topic for topic, name in TOPIC_NAMES.items()}


def _content_id(message: Any) -> bytes:
    topics = message.topicIDs
    topic = TOPICS_BY_NAME.get(topics[0]) if len(topics) == 1 else None
    if topic is None:
        return message_id(Topic.TX, bytes(message.data))  # refused by the allowed topics
    return message_id(topic, bytes(message.data))


class _NoValidationCache:
    """In place of py-libp2p's cache of validation results. Duplicates never reach validation
    (the seen cache, keyed by content id, drops them first), and caching a failure under a
    block's id would let one forged copy shadow the genuine block that follows it."""

    def get(self, message_id: bytes) -> None:
        return None

    def put(self, message_id: bytes, result: Any) -> None:
        pass

    def clear_expired(self) -> None:
        pass


class _ContentMessageCache(MessageCache):
    """GossipSub's recent-message cache, keyed by message id (py-libp2p's by `from + seqno`)."""

    def put(self, msg: rpc_pb2.Message) -> None:
        key = _content_id(msg)
        if key in self.msgs:
            return
        self.msgs[key] = msg
        self.history[0].append(CacheEntry(key, msg.topicIDs))


class _Gossip(GossipSub):
    """py-libp2p's GossipSub under StrictNoSign (see the module's docs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mcache = _ContentMessageCache(self.mcache.window_size, self.mcache.history_size)

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        # A `from + seqno` seen with other content: meaningless without them; a message is
        # named by its content, and what it says is checked by the node.
        return True


def unsigned_violation(message: Any) -> str | None:
    """What makes `message` break StrictNoSign (a field it must not carry), or None."""
    for field in ("from_id", "seqno", "signature", "key"):
        if message.HasField(field):
            return f"carries {'from' if field == 'from_id' else field}"
    return None


async def publish_unsigned(pubsub: Pubsub, name: str, payload: bytes) -> None:
    """Publish `payload` on topic `name` under StrictNoSign: the data and the topic only."""
    message = rpc_pb2.Message(data=payload, topicIDs=[name])
    await pubsub.push_msg(pubsub.my_id, message)


def gossipsub() -> GossipSub:
    return _Gossip(
        protocols=[MESHSUB],
        degree=6,
        degree_low=4,
        degree_high=12,
        time_to_live=30,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
        max_pending_messages_per_peer=OUTBOX_MAX,
    )


def gossip_pubsub(
    host: Any,
    router: GossipSub,
    frame_bytes_max: int,
    validate: Callable[[Topic, ID, Any], Awaitable[bool]],
) -> Pubsub:
    """Pubsub over `host` and `router` on our topics only, each message validated by
    `validate(topic, forwarder, message)`."""
    pubsub = Pubsub(
        host,
        router,
        msg_id_constructor=_content_id,
        strict_signing=False,  # StrictNoSign: see publish_unsigned and the validator
        max_inbound_rpc_size=frame_bytes_max + 64 * 1024,
        allowed_topics=set(TOPIC_NAMES.values()),
    )
    pubsub.validation_cache = _NoValidationCache()  # type: ignore[assignment]
    for topic, name in TOPIC_NAMES.items():
        validator = functools.partial(validate, topic)
        pubsub.set_topic_validator(name, validator, True)
    return pubsub


async def ask_node(
    call_async: Callable[[Callable[[], None]], None],
    tasks: set[asyncio.Future[Verdict]],
    handler: GossipHandler,
    remote: str,
    topic: Topic,
    payload: bytes,
) -> Verdict:
    """Run `handler` on the asyncio loop (`call_async` hands it over) and wait for its verdict
    without a thread. Its task stays in `tasks` until it ends: asyncio itself keeps only a weak
    reference to a running task."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    verdicts: list[Verdict] = []

    def settle(verdict: Verdict) -> None:
        verdicts.append(verdict)
        done.set()

    def finished(task: asyncio.Future[Verdict]) -> None:
        tasks.discard(task)
        verdict = Verdict.IGNORE  # a failure of ours is not the peer's fault
        if not task.cancelled() and task.exception() is None:
            verdict = task.result()
        elif not task.cancelled():
            log.error("gossip handler failed", exc_info=task.exception())
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(settle, verdict)

    def start() -> None:
        task = asyncio.ensure_future(handler(remote, topic, payload))
        tasks.add(task)
        task.add_done_callback(finished)

    call_async(start)
    await done.wait()
    return verdicts[0]


async def drain(subscription: Any) -> None:
    """Empty a subscription's queue: the topic validator already handed every message over."""
    while True:
        await subscription.get()

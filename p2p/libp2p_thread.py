"""The libp2p host's own thread, as the asyncio side sees it: starting and stopping it, and
the two bounded ways across, `_to_trio` (commands into a trio memory channel, fed with
`TrioToken.run_sync_soon`) and `_call_async` (`loop.call_soon_threadsafe`).

Why a thread and not trio guest mode (`bench/adapter_modes.py` measures both in one run; three
runs on 2 cores agreed): the thread crossed asyncio -> trio -> asyncio faster (median 44 vs
60 us) and carried 1.1-1.3x the loopback TCP ping-pong rate, the shape of libp2p's work; guest
mode queued bursts of commands about 1.1x faster and kept the daemon's 1 ms timers closer (p99
lateness 0.1 vs 0.4-0.5 ms, both far inside consensus timeouts of hundreds of ms). Network
throughput and latency decide it, and a thread also keeps a stuck or crashing libp2p host off
the loop that runs consensus timeouts and the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import trio

from carechain.p2p.network import PeerError

log = logging.getLogger("carechain.p2p")


class TrioThread:
    """The base of `Libp2pNetwork`, which supplies `_trio_main`: the thread's trio side. That
    sets `_token`, `_stop` and `_commands` as it begins, runs `_run_commands` and, once it
    serves, calls `_mark_started` through `_call_async`; it returns when `_stop` is set.
    (A base class, not a collaborator: nearly every method of the network crosses between
    the threads through these.)"""

    def __init__(self) -> None:
        self.dropped_commands = 0  # commands to the libp2p thread past its queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._commands: trio.MemorySendChannel[Callable[[], Any]] | None = None
        self._stop: trio.Event | None = None
        self._started: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._thread = threading.Thread(target=self._run_trio, name="carechain-libp2p", daemon=True)
        self._thread.start()
        await self._started

    async def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        if self.failure is not None:
            raise PeerError(f"the libp2p host failed: {self.failure!r}")

    def _run_trio(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:  # surfaced to asyncio, never lost in the thread
            self.failure = exc
            log.exception("libp2p host stopped with an error")
            if self._loop is not None and self._started is not None:
                self._loop.call_soon_threadsafe(self._fail_start, exc)

    def _fail_start(self, exc: BaseException) -> None:
        assert self._started is not None
        if not self._started.done():
            self._started.set_exception(PeerError(f"libp2p host could not start: {exc!r}"))

    def _call_async(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the asyncio loop is closing
            self._loop.call_soon_threadsafe(function, *args)

    def _to_trio(self, command: Callable[[], Any]) -> None:
        if self._token is None or self._commands is None:
            raise PeerError("the network is not running")
        commands = self._commands

        def enqueue() -> None:
            try:
                commands.send_nowait(command)
            except trio.WouldBlock:
                self.dropped_commands += 1

        self._token.run_sync_soon(enqueue)

    def _mark_started(self) -> None:
        assert self._started is not None
        if not self._started.done():
            self._started.set_result(None)

    async def _run_commands(self, receive: trio.MemoryReceiveChannel[Callable[[], Any]]) -> None:
        async for command in receive:
            command()

    async def _trio_main(self) -> None:
        raise NotImplementedError

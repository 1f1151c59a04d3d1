"""The two ways to host trio-based py-libp2p in the asyncio/uvloop daemon, measured in one run.

- thread: `trio.run` in its own thread; commands cross with `TrioToken.run_sync_soon` and
  replies with `loop.call_soon_threadsafe` (what `carechain.p2p.libp2p_net` does).
- guest: `trio.lowlevel.start_guest_run` on the daemon's own uvloop loop; trio's I/O waits run
  in a helper thread and every trio step runs on the asyncio thread.

For each mode it prints: the median asyncio -> trio -> asyncio round trip; commands per second
asyncio -> trio; and, while trio pumps loopback TCP ping-pong (the shape of libp2p's work), the
ping-pong rate and how late the daemon's own 1 ms timers fire (p50/p99), since consensus
timeouts and the API share that loop.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio
import uvloop
from common import report

MESSAGE = b"x" * 200


class Bridge:
    """A trio run reachable from asyncio: `call(fn)` runs fn inside trio."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.token: trio.lowlevel.TrioToken | None = None
        self.send: trio.MemorySendChannel[Callable[[], Any]] | None = None
        self.nursery: trio.Nursery | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

        async def trio_main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            # unbounded here: this measures the crossing, not back-pressure
            send, receive = trio.open_memory_channel[Callable[[], Any]](math.inf)
            self.send = send
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                loop.call_soon_threadsafe(ready.set_result, None)
                async for command in receive:
                    command()
                nursery.cancel_scope.cancel()

        def done(result: outcome.Outcome[None]) -> None:
            def settle() -> None:
                try:
                    result.unwrap()
                except BaseException as exc:
                    for future in (ready, self.finished):
                        if not future.done():
                            future.set_exception(exc)
                    return
                self.finished.set_result(None)

            loop.call_soon_threadsafe(settle)

        if self.mode == "thread":

            def host() -> None:
                done(outcome.capture(trio.run, trio_main))

            threading.Thread(target=host, daemon=True).start()
        else:

            def soon_threadsafe(function: Callable[[], None]) -> None:
                loop.call_soon_threadsafe(function)

            def soon(function: Callable[[], None]) -> None:
                loop.call_soon(function)

            trio.lowlevel.start_guest_run(
                trio_main,
                run_sync_soon_threadsafe=soon_threadsafe,
                run_sync_soon_not_threadsafe=soon,
                done_callback=done,
                host_uses_signal_set_wakeup_fd=True,  # uvloop owns the wakeup fd
            )
        await ready

    def call(self, command: Callable[[], Any]) -> None:
        assert self.token is not None
        assert self.send is not None
        send = self.send
        self.token.run_sync_soon(lambda: send.send_nowait(command))

    def spawn(self, function: Callable[[], Awaitable[None]]) -> None:
        self.call(lambda: self.nursery.start_soon(function))  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self.token is not None
        assert self.send is not None
        self.token.run_sync_soon(self.send.close)
        await self.finished


async def round_trip_us(bridge: Bridge, count: int) -> float:
    loop = asyncio.get_running_loop()
    samples = []
    for _ in range(count):
        back: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()

        def reply(future: asyncio.Future[None] = back) -> None:
            loop.call_soon_threadsafe(future.set_result, None)

        bridge.call(reply)
        await back
        samples.append(time.perf_counter() - started)
    return 1e6 * statistics.median(samples)


async def commands_per_s(bridge: Bridge, count: int) -> float:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    seen = [0]

    def command() -> None:
        seen[0] += 1
        if seen[0] == count:
            loop.call_soon_threadsafe(finished.set_result, None)

    started = time.perf_counter()
    for index in range(count):
        bridge.call(command)
        if index % 1000 == 999:
            await asyncio.sleep(0)  # the daemon yields between bursts
    await finished
    return count / (time.perf_counter() - started)


async def ping_pong_with_timer_lag(bridge: Bridge, exchanges: int) -> dict[str, float]:
    """Trio pumps TCP ping-pong on loopback while asyncio measures its 1 ms timers' lateness."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[float] = loop.create_future()

    async def pump() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def echo(stream: trio.SocketStream) -> None:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)

            await nursery.start(trio.serve_listeners, echo, listeners)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            started = time.perf_counter()
            for _ in range(exchanges):
                await client.send_all(MESSAGE)
                received = 0
                while received < len(MESSAGE):
                    received += len(await client.receive_some(65536))
            elapsed = time.perf_counter() - started
            await client.aclose()
            nursery.cancel_scope.cancel()
        loop.call_soon_threadsafe(finished.set_result, elapsed)

    lateness: list[float] = []
    bridge.spawn(pump)
    while not finished.done():
        planned = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        lateness.append(max(0.0, time.perf_counter() - planned))
    elapsed = await finished
    cuts = statistics.quantiles(lateness, n=100)
    return {
        "ping_pong_per_s": exchanges / elapsed,
        "timer_lateness_p50_ms": 1000 * cuts[49],
        "timer_lateness_p99_ms": 1000 * cuts[98],
    }


async def measure(mode: str, count: int) -> dict[str, float]:
    bridge = Bridge(mode)
    await bridge.start()
    try:
        figures = {
            "round_trip_us_median": await round_trip_us(bridge, count),
            "commands_per_s": await commands_per_s(bridge, 10 * count),
        }
        figures.update(await ping_pong_with_timer_lag(bridge, count))
        return figures
    finally:
        await bridge.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    arguments = parser.parse_args()
    figures: dict[str, float] = {}
    for mode in ("thread", "guest"):
        for key, value in uvloop.run(measure(mode, arguments.count)).items():
            figures[f"{mode}_{key}"] = value
    report("adapter_modes", figures)


if __name__ == "__main__":
    main()

"""Soak: validator processes (4 unless told) on loopback under a steady load for a set time;
commits, round changes and each node's resident memory over time: all of it, and the
anonymous part (without the table files LevelDB maps into memory to read them, pages the
kernel takes back when it needs them). Memory must level off: the figure to watch is the
growth over the second half of the run against the first half's.

The load is patient registrations (each a new account, so state grows all the time), signed
as they are sent, in batches through the nodes' APIs in turn.

Run: .venv/bin/python bench/soak.py [--seconds 60] [--rate 100]   (the record: --seconds 1800)
Memory through a million transactions (one validator, as fast as it takes them):
    .venv/bin/python bench/soak.py --validators 1 --rate 3000 --senders 3 --seconds 1200 \
        --txs 1000000
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import report

from carechain.cli.nodes import spawn, wait_for_api
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey
from carechain.consensus.types import CommitCertificate
from carechain.node.testnet import make_testnet
from carechain.node.wallet import builders
from carechain.node.wallet.client import ApiRequestError, Client, NodeUnreachable

CHAIN = "carechain-soak"
SAMPLE_S = 5.0


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def resident_anonymous_mib(pid: int) -> float:
    """Resident memory that is the process's own (heap, stacks), without the file pages it
    maps (LevelDB reads its table files through mmap; the kernel reclaims those pages)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load(threading.Thread):
    """`rate` registrations a second, in ten batches a second on schedule (as many as it
    can when behind), to the nodes in turn; sender `lane` of `lanes` signs every lanes-th
    patient, so several senders never repeat one."""

    def __init__(self, clients: list[Client], rate: int, lane: int = 0, lanes: int = 1) -> None:
        super().__init__(daemon=True)
        self.clients, self.rate, self.lane, self.lanes = clients, rate, lane, lanes
        self.sent = self.refused = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        counter = itertools.count(1 + self.lane, self.lanes)
        per_batch = max(1, self.rate // 10)
        began = time.monotonic()
        for turn in itertools.count(self.lane):
            if self.stopping.wait(max(0.0, began + turn / 10 - time.monotonic())):
                return
            txs = []
            expiry = int(time.time() * 1000) + 3_600_000
            for _ in range(per_batch):
                index = next(counter)
                first = PrivateKey(b"\x5a" + index.to_bytes(31, "big"))
                second = PrivateKey(b"\x5b" + index.to_bytes(31, "big"))
                keys = (first.public_key, second.public_key)
                draft = builders.register_patient(CHAIN, keys, expiry)
                txs.append(draft.signed(first, second).encode().hex())
            client = self.clients[turn % len(self.clients)]
            try:
                answer = client.request("POST", "/v1/txs/batch", {"txs": txs})
            except (ApiRequestError, NodeUnreachable):
                self.refused += len(txs)
                continue
            ok = sum(1 for r in answer["results"] if "status" in r)
            self.sent += ok
            self.refused += len(txs) - ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=100, help="transactions per second")
    parser.add_argument("--base-port", type=int, default=29500)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--senders", type=int, default=1, help="load threads sharing the rate")
    parser.add_argument(
        "--txs", type=int, default=None, help="stop early once this many have committed"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="carechain-soak-"))
    nodes = make_testnet(folder, args.validators, base_port=args.base_port, chain_id=CHAIN)
    for node in nodes:
        config = load_node_config(node.home)
        log = config.log.model_copy(update={"level": "warning"})
        save_node_config(node.home, config.model_copy(update={"log": log}))
    processes = [spawn(node.home, node.home / "node.log") for node in nodes]
    try:
        clients = [wait_for_api(n.home, p) for n, p in zip(nodes, processes, strict=True)]
        watched = [psutil.Process(p.pid) for p in processes]
        lanes = [
            Load(clients, args.rate // args.senders, lane, args.senders)
            for lane in range(args.senders)
        ]
        say(
            f"{args.validators} validator(s) under {args.rate} tx/s for {args.seconds:.0f} s "
            f"({folder})"
        )
        started = time.monotonic()
        for load in lanes:
            load.start()
        samples: list[dict[str, float]] = []
        while (elapsed := time.monotonic() - started) < args.seconds:
            time.sleep(min(SAMPLE_S, max(0.0, args.seconds - elapsed)))
            rss = [w.memory_info().rss / 2**20 for w in watched]
            anon = [resident_anonymous_mib(w.pid) for w in watched]
            height = int(clients[0].status()["height"])
            accepted = sum(load.sent for load in lanes)
            samples.append(
                {
                    "t_s": time.monotonic() - started,
                    "height": height,
                    "rss": max(rss),
                    "anon": max(anon),
                }
            )
            say(
                f"{samples[-1]['t_s']:6.0f} s  height {height:6d}  accepted {accepted:8d}  "
                f"max RSS {max(rss):6.1f} MiB (anonymous {max(anon):6.1f})"
            )
            if args.txs is not None and accepted >= args.txs:
                break
        seconds = time.monotonic() - started
        for load in lanes:
            load.stopping.set()
        for load in lanes:
            load.join(10)
        time.sleep(3)  # the last batches commit
        height = int(clients[0].status()["height"])
        rounds, committed = [], 0
        for h in range(1, height + 1):
            answer = clients[0].get(f"/v1/blocks/{h}")
            rounds.append(CommitCertificate.decode(bytes.fromhex(answer["certificate"])).round)
            committed += len(answer["txs"])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    half = len(samples) // 2
    first_half = [s["rss"] for s in samples[: max(1, half)]]
    second_half = [s["rss"] for s in samples[half:]]
    report(
        "soak",
        {
            "validators": args.validators,
            "seconds": round(seconds),
            "offered_tx_per_s": args.rate,
            "accepted_txs": sum(load.sent for load in lanes),
            "refused_txs": sum(load.refused for load in lanes),
            "committed_txs": committed,
            "committed_heights": height,
            "committed_tx_per_s": committed / seconds,
            "heights_with_round_changes": sum(1 for r in rounds if r > 0),
            "max_round": max(rounds, default=0),
            "rss_mib_start": samples[0]["rss"] if samples else 0.0,
            "rss_mib_end": samples[-1]["rss"] if samples else 0.0,
            "rss_mib_growth_first_half": max(first_half) - min(first_half),
            "rss_mib_growth_second_half": max(second_half) - statistics.median(first_half),
            "rss_mib_series": [round(s["rss"], 1) for s in samples],
            "rss_anonymous_mib_end": samples[-1]["anon"] if samples else 0.0,
            "rss_anonymous_mib_max": max((s["anon"] for s in samples), default=0.0),
            "rss_anonymous_mib_series": [round(s["anon"], 1) for s in samples],
        },
    )


if __name__ == "__main__":
    main()

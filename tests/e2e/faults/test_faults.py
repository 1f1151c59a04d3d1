"""Faults injected into 4 real validator processes under load (scenarios 1, 5 and 6 of the
reliability plan); each ends with the harness's agreement checks once the load has stopped.
The recovery figures each test measures are printed (run with -s to see them)."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.records import Evidence, ValidatorAction
from carechain.consensus.types import CommitCertificate, Validator
from carechain.node.wallet import builders
from carechain.node.wallet.client import ApiRequestError, Client
from carechain.node.wallet.keystore import load_key
from carechain.tests.e2e.faults import netns
from carechain.tests.e2e.faults.harness import CHAIN, FaultNet, Load, fault_net, skewed_clock
from carechain.tests.e2e.faults.netns import Namespaces

pytestmark = pytest.mark.slow


def _progress_after(load: Load, height: int, timeout_s: float) -> float:
    """Seconds until a height above `height` is seen (AssertionError after `timeout_s`)."""
    started = time.monotonic()
    while not any(c.height > height for c in load.heights):
        assert time.monotonic() - started < timeout_s, f"no block above {height}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_validator_killed_under_load_restarts_catches_up_and_agrees(tmp_path: Path) -> None:
    with fault_net(tmp_path, 27400) as net:
        with Load(net, seed=1) as load:
            time.sleep(3)
            victim = net.names[2]
            net.kill(victim)  # SIGKILL: no clean shutdown, mid-round
            time.sleep(5)
            net.restart(victim)
            started = time.monotonic()
            others = max(h for name, h in net.heights().items() if name != victim)
            while net.heights()[victim] < others:
                assert time.monotonic() - started < 30, "the restarted validator did not catch up"
                time.sleep(0.1)
            print(f"caught up to height {others} in {time.monotonic() - started:.2f} s")
            time.sleep(2)
        assert net.check_agreement(load.accepted) > others


def test_a_paused_validator_costs_a_bounded_write_outage(tmp_path: Path) -> None:
    with fault_net(tmp_path, 27500) as net:
        with Load(net, seed=2) as load:
            time.sleep(3)
            paused = net.names[1]
            since = time.monotonic()
            net.pause(paused)  # SIGSTOP: its turns as proposer need a round change
            time.sleep(10)
            until = time.monotonic()
            net.resume(paused)
            outage = load.longest_gap_s(since, until)
            print(f"longest write outage while paused: {outage:.2f} s")
            assert outage < 5.0
            time.sleep(3)
        net.check_agreement(load.accepted)


def test_two_of_four_stopped_halts_the_chain_and_it_resumes_without_a_fork(
    tmp_path: Path,
) -> None:
    with fault_net(tmp_path, 27600) as net:
        with Load(net, seed=3) as load:
            time.sleep(3)
            for name in net.names[2:]:
                net.kill(name)
            time.sleep(2)
            halted = max(net.heights().values())
            time.sleep(15)  # more than 1/3 of the power is gone: nothing may commit
            assert max(net.heights().values()) == halted
            for name in net.names[2:]:
                net.restart(name)
            resumed = _progress_after(load, halted, 30)
            print(f"the chain resumed {resumed:.2f} s after the restarts")
            time.sleep(2)
        net.check_agreement(load.accepted)


def test_a_validator_killed_again_and_again_under_load_restarts_on_a_consistent_store(
    tmp_path: Path,
) -> None:
    """SIGKILL at seeded random moments (some fall inside a block commit); each restart opens
    the store, which checks itself, and the node rejoins."""
    seed = 7
    chance = random.Random(seed)
    with fault_net(tmp_path, 27700) as net:
        with Load(net, seed=4) as load:
            victim = net.names[3]
            for _ in range(5):
                time.sleep(chance.uniform(0.5, 2.5))
                net.kill(victim)
                net.restart(victim)  # fails, quoting the log, if the store does not open
            others = max(h for name, h in net.heights().items() if name != victim)
            started = time.monotonic()
            while net.heights()[victim] < others:
                assert time.monotonic() - started < 30, f"no catch-up (seed {seed})"
                time.sleep(0.1)
            time.sleep(2)
        net.check_agreement(load.accepted)


def test_a_torn_wal_tail_is_cut_off_and_the_validator_rejoins(tmp_path: Path) -> None:
    """What a crash in the middle of a WAL write leaves (a record never synced, so never
    sent): a short header, then a record cut short. The node cuts the tail off, says so, runs
    on, and signs nothing twice (the agreement check finds no equivocation evidence)."""
    torn_writes = [
        b"\xcc\xc1\x00\x00",
        b"\xcc\xc1" + (100).to_bytes(4, "big") + bytes(4) + b"x" * 10,
    ]
    with fault_net(tmp_path, 27800) as net:
        with Load(net, seed=5) as load:
            victim = net.names[1]
            for torn in torn_writes:
                time.sleep(2)
                assert net.terminate(victim) == 0
                wal = max((net.home(victim) / "data" / "wal").glob("wal-*.log"))
                wal.write_bytes(wal.read_bytes() + torn)
                net.restart(victim)
            log = (net.home(victim) / "node.log").read_text()
            assert log.count("cut a torn tail") == len(torn_writes)
            time.sleep(2)
        net.check_agreement(load.accepted)


def test_a_validator_with_a_clock_ahead_of_the_drift_bound_proposes_nothing_that_commits(
    tmp_path: Path,
) -> None:
    """One validator's wall clock runs 8 s ahead (the genesis allows 2 s of drift): the
    blocks it proposes carry its time and the others refuse them, so its turns end in round
    changes; the chain goes on with the other three, and the skewed node follows it."""
    with fault_net(tmp_path, 27900) as net:
        with Load(net, seed=6) as load:
            skewed = net.names[0]
            time.sleep(2)
            assert net.terminate(skewed) == 0
            net.restart(skewed, skewed_clock(+8))
            first = net.heights()[skewed] + 1
            time.sleep(15)
            last = min(net.heights().values())
        net.check_agreement(load.accepted)
        client = net.live_clients()[1]
        status = client.status()
        key = next(v["public_key"] for v in status["validators"] if v["name"] == skewed)
        headers = [client.get(f"/v1/blocks/{h}")["header"] for h in range(first, last + 1)]
        assert len(headers) >= 5, f"the chain stalled: heights {first}..{last}"
        proposers = [h["proposer"] for h in headers]
        assert key not in proposers, "a block proposed with the skewed clock was committed"
        latest_ms = time.time() * 1000 + 2_000  # the drift bound, on a true clock
        assert all(h["time_ms"] <= latest_ms for h in headers)
        print(f"heights {first}..{last} committed without the skewed validator's proposals")


def test_a_wiped_validator_resyncs_and_signs_only_after_the_chain_moved_past_it(
    tmp_path: Path,
) -> None:
    """Its data folder (blocks and WAL) is deleted while it is down: it restarts with no record
    of what it signed, follows the chain without signing until a block proposed after its
    restart is committed, then signs again. No height it may have signed at before sees a
    second signature of it."""
    with fault_net(tmp_path, 28000) as net:
        with Load(net, seed=8) as load:
            wiped = net.names[2]
            time.sleep(3)
            net.kill(wiped)
            down_at = max(net.heights().values())
            shutil.rmtree(net.home(wiped) / "data")
            net.restart(wiped)
            client = net.clients[wiped]
            assert client.status()["signing_held"] is True
            started = time.monotonic()
            while client.status()["signing_held"]:
                assert time.monotonic() - started < 30, "the wiped validator never signed again"
                time.sleep(0.1)
            signs_from = client.status()["signs_from_height"]
            print(f"resynced and signing again {time.monotonic() - started:.2f} s after restart")
            time.sleep(3)
        height = net.check_agreement(load.accepted)
        other = net.live_clients()[0]
        validators = other.status()["validators"]
        key = next(v["public_key"] for v in validators if v["name"] == wiped)
        # (down_at + 1 may hold a precommit it sent just before it was killed)
        signed = [h for h in range(down_at + 2, height + 1) if _signed_at(other, h, key)]
    assert signed, "it never signed again"
    assert min(signed) >= signs_from > down_at + 1, (signed, signs_from, down_at)


def _signed_at(client: Client, height: int, key: str) -> bool:
    encoded = bytes.fromhex(client.get(f"/v1/blocks/{height}")["certificate"])
    return any(p.validator.hex() == key for p in CommitCertificate.decode(encoded).precommits)


@pytest.fixture
def spaces() -> Iterator[Namespaces]:
    reason = netns.available()
    if reason is not None:
        pytest.skip(reason)
    made = Namespaces(4)
    try:
        made.up()
        yield made
    finally:
        made.down()


def test_a_validator_partitioned_away_past_the_round_timeouts_catches_up_after_healing(
    tmp_path: Path, spaces: Namespaces
) -> None:
    """Scenario 4a: one validator's links are cut for 12 s (its round timeouts are 1-2 s):
    the other three go on; after healing it catches up and all agree."""
    with fault_net(tmp_path, 28100, spaces) as net:
        with Load(net, seed=9) as load:
            time.sleep(3)
            cut = net.names[3]
            since = time.monotonic()
            spaces.split([3], [0, 1, 2])
            time.sleep(12)
            until = time.monotonic()
            spaces.heal()
            outage = load.longest_gap_s(since, until)
            print(f"longest write outage with one validator cut off: {outage:.2f} s")
            assert outage < 5.0
            others = max(h for name, h in net.heights().items() if name != cut)
            healed = time.monotonic()
            while net.heights()[cut] < others:
                assert time.monotonic() - healed < 30, "the cut-off validator did not catch up"
                time.sleep(0.1)
            print(f"caught up {time.monotonic() - healed:.2f} s after healing")
            time.sleep(2)
        net.check_agreement(load.accepted)


def test_a_two_two_split_commits_nothing_and_resumes_after_healing(
    tmp_path: Path, spaces: Namespaces
) -> None:
    """Scenario 4b: neither half has more than 2/3 of the power: no block commits on either
    side while split (after the one that may be in flight); healed, the chain resumes."""
    with fault_net(tmp_path, 28200, spaces) as net:
        with Load(net, seed=10) as load:
            time.sleep(3)
            spaces.split([0, 1], [2, 3])
            time.sleep(2)
            halted = net.heights()
            time.sleep(12)
            assert net.heights() == halted, f"a block committed while split: {halted}"
            spaces.heal()
            # bounded by the dial interval, not TCP's retransmission backoff (p2p: bound_stalls)
            resumed = _progress_after(load, max(halted.values()), 8)
            print(f"the chain resumed {resumed:.2f} s after healing the 2-2 split")
            time.sleep(2)
        net.check_agreement(load.accepted)


def test_a_byzantine_validator_is_outvoted_and_its_equivocations_are_recorded(
    tmp_path: Path,
) -> None:
    """Scenario 9: one validator process (byzantine.py) sends, with every vote, a conflicting
    vote, a vote for a far height, a badly signed vote, a stranger's vote, garbage, and now and
    then an oversize frame. The three honest nodes keep committing and agreeing, and the chain
    records the equivocations as evidence against that validator only."""
    with fault_net(tmp_path, 28300) as net:
        with Load(net, seed=11) as load:
            time.sleep(2)
            villain = net.names[3]
            net.restart_byzantine(villain)
            since = time.monotonic()
            time.sleep(15)
            outage = load.longest_gap_s(since, time.monotonic())
            print(f"longest write outage with a Byzantine validator: {outage:.2f} s")
        net.check_agreement(load.accepted, evidence=True)
        honest = net.live_clients()[0]
        validators = honest.status()["validators"]
        key = next(v["public_key"] for v in validators if v["name"] == villain)
        entries = honest.get("/v1/state/evidence")["entries"]
        seen = [int(c.status()["equivocations_seen"]) for c in net.live_clients()]
        accused = {Evidence.decode(bytes.fromhex(value)).validator.hex() for _, value in entries}
        print(f"{len(entries)} equivocations recorded")
    assert entries, "no evidence was recorded"
    assert min(seen) > 0, f"an honest node saw no conflicting votes: {seen}"
    assert accused == {key}
    assert outage < 5.0


def test_a_validator_added_and_one_removed_by_governance_under_load_with_a_restart(
    tmp_path: Path,
) -> None:
    """Scenario 8: governance adds a fifth validator (a node is killed as the change is
    submitted and restarted two seconds later), the newcomer starts, syncs and signs; then
    governance removes an original validator, which stops. The remaining four agree."""
    with fault_net(tmp_path / "net", 28400) as net:
        with Load(net, seed=12) as load:
            time.sleep(2)
            newcomer, home = net.add_validator_home(tmp_path / "net")
            node_key = load_key(home / "keys" / "node.json", None).public_key
            validator_key = load_key(home / "keys" / "validator.json", None)
            joining = Validator(newcomer, validator_key.public_key, node_key, 10)
            originals = net.names[:4]
            signers = [_validator_key(net, name) for name in originals[:3]]
            added = _governance(net, ValidatorAction.ADD, joining, signers, restart=originals[1])
            print(f"validator added at height {added}")
            net.start_extra(newcomer)
            joined = _wait_for_signature(net, newcomer, validator_key.public_key.hex())
            print(f"the newcomer signed a certificate at height {joined}")
            leaving = originals[3]
            leaving_node = load_key(net.home(leaving) / "keys" / "node.json", None).public_key
            gone = Validator(leaving, _validator_key(net, leaving).public_key, leaving_node, 10)
            removed = _governance(
                net, ValidatorAction.REMOVE, gone, [*signers, validator_key], restart=None
            )
            print(f"{leaving} removed at height {removed}")
            net.kill(leaving)
            time.sleep(3)
        height = net.check_agreement(load.accepted)
        status = net.clients[newcomer].status()
        assert sorted(v["name"] for v in status["validators"]) == sorted([*originals[:3], newcomer])
        assert height > removed


def _validator_key(net: FaultNet, name: str) -> PrivateKey:
    return load_key(net.home(name) / "keys" / "validator.json", None)


def _governance(
    net: FaultNet,
    action: ValidatorAction,
    validator: Validator,
    signers: list[PrivateKey],
    restart: str | None,
) -> int:
    """Submit a validator change signed by `signers` (killing `restart` as it goes out and
    restarting it 2 s later); the height it committed at."""
    client = net.live_clients()[0]
    try:
        nonce = int(client.get(f"/v1/accounts/{GOVERNANCE_ACCOUNT.hex()}")["nonce"]) + 1
    except ApiRequestError:
        nonce = 1
    expiry = int(time.time() * 1000) + 600_000
    draft = builders.change_validator(CHAIN, nonce, expiry, action, validator)
    tx = draft.signed(*signers)
    client.submit(tx)
    if restart is not None:
        net.kill(restart)
        time.sleep(2)
        net.restart(restart)
    answer = Client(client.base_url, timeout_s=30).wait_committed(tx.id, timeout_s=60)
    return int(answer["height"])


def _wait_for_signature(net: FaultNet, name: str, key: str) -> int:
    """The first height whose certificate holds `name`'s precommit (60 s at most)."""
    deadline = time.monotonic() + 60
    client = net.live_clients()[0]
    checked = int(client.status()["height"])
    while time.monotonic() < deadline:
        height = int(client.status()["height"])
        for h in range(checked + 1, height + 1):
            if _signed_at(client, h, key):
                return h
        checked = height
        time.sleep(0.2)
    raise AssertionError(f"{name} never signed: {net.clients[name].status()}")

"""A block at genesis's maxima on a real network: four validator processes commit a proposal
of exactly `max_block_txs` transactions filling `max_block_bytes` (about 8 MiB, twice the
codec's 4 MiB default that once bounded the WAL and stopped every proposer that met such a
pool). The transactions are encrypted glucose readings of one patient's vault, queued behind
the vault's first nonce so that they all become proposable at once."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from carechain.cli.nodes import Devnet
from carechain.config.genesis import load_genesis, save_genesis
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey, account_id
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import Block, BlockHeader, Tx
from carechain.node.wallet import builders
from carechain.node.wallet.client import Client

pytestmark = pytest.mark.slow

CHAIN = "carechain-largest-block"
PORT = 27700
READINGS = 1900  # ~4.3 KB each: the block is about 8.2 MB
PATIENT = (PrivateKey(b"\x61" * 32), PrivateKey(b"\x62" * 32))


def _readings(expiry_ms: int, epoch_key: bytes, count: int) -> list[Tx]:
    vault = vault_id_of(account_id(PATIENT[0].public_key), "glucose")
    txs = []
    for nonce in range(1, count + 1):
        encrypted = builders.encrypt_record(
            b"%04d CGM trace " % nonce + b"x" * 3900,
            record_id=nonce.to_bytes(16, "big"),
            data_type="glucose",
            epoch=1,
            epoch_key=epoch_key,
            record_time_ms=expiry_ms - 86_400_000,
            inline_bytes_max=16 * 1024 - 64,
        )
        put = builders.TxDraft(CHAIN, "record.put", vault, nonce, expiry_ms, encrypted.body)
        txs.append(put.signed(*PATIENT))
    return txs


def _wait_height(client: Client, above: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while (height := int(client.status()["height"])) <= above:
        assert time.monotonic() < deadline, f"no block above {above} in {timeout_s} s"
        time.sleep(0.1)
    return height


def test_a_block_at_the_genesis_maxima_commits_on_four_validators(tmp_path: Path) -> None:
    expiry = int(time.time() * 1000) + 3_600_000
    keys = (PATIENT[0].public_key, PATIENT[1].public_key)
    register = builders.register_patient(CHAIN, keys, expiry).signed(*PATIENT)
    vault_draft, epoch_key = builders.create_vault(
        CHAIN, account_id(keys[0]), 2, expiry, data_type="glucose",
        template=Template.PATIENT_CONTROLLED, team=(), members=keys,
    )  # fmt: skip
    # one more reading than the block takes: the proposal is cut by the maxima, not the pool
    readings = _readings(expiry, epoch_key, READINGS + 1)
    # as large as the proposer's block will be (its header counts too)
    stand_in = BlockHeader(CHAIN, 10, 0, 2**41, b"k" * 32, *([b"h" * 32] * 5))
    block_bytes = len(Block(stand_in, tuple(readings[:READINGS])).encode())

    devnet = Devnet(tmp_path, 4, PORT, chain_id=CHAIN, heartbeat_interval_ms=2000)
    for node in devnet.nodes:
        genesis = load_genesis(node.home / "genesis.json")
        # the proposer keeps 1,024 bytes for the header: READINGS transactions fill the rest
        params = dataclasses.replace(
            genesis.params, max_block_txs=READINGS, max_block_bytes=block_bytes + 1024
        )
        save_genesis(node.home / "genesis.json", dataclasses.replace(genesis, params=params))
        config = load_node_config(node.home)
        # round timeouts long enough that this machine builds and checks the whole block in
        # round 0 (the proposal budget is a share of the propose timeout)
        consensus = config.consensus.model_copy(
            update={"timeout_propose_ms": 30_000, "timeout_ms_max": 60_000}
        )
        save_node_config(node.home, config.model_copy(update={"consensus": consensus}))
    clients = devnet.start()
    try:
        for tx in (register, vault_draft.signed(*PATIENT)):
            clients[0].submit(tx)
            clients[0].wait_committed(tx.id, 30)
        # every node holds nonces 2.. first (queued behind nonce 1), then nonce 1 frees them
        queued = [readings[i : i + 150] for i in range(1, len(readings), 150)]
        with ThreadPoolExecutor(4) as pool:
            answers = pool.map(
                lambda client: [r for batch in queued for r in client.submit_batch(batch)],
                clients,
            )
            refused = [r for node in answers for r in node if "error" in r]
        assert not refused, refused[:3]
        before = int(clients[0].status()["height"])
        for client in clients:
            client.submit(readings[0])
        full = None
        deadline = time.monotonic() + 120
        while full is None:
            height = _wait_height(clients[0], before, 120)
            for h in range(before + 1, height + 1):
                if clients[0].get(f"/v1/blocks/{h}/txs")["txs"]:
                    full = h
                    break
            before = height
            assert time.monotonic() < deadline
        block = clients[0].get(f"/v1/blocks/{full}")
        encoded = bytes.fromhex(block["block"])
        assert len(block["txs"]) == READINGS, "the block holds genesis's maximum of transactions"
        assert block_bytes <= len(encoded) <= block_bytes + 1024, "and its maximum of bytes"
        assert len(encoded) > 4 * 1024 * 1024
        for client in clients:
            _wait_height(client, full - 1, 60)
            assert client.get(f"/v1/blocks/{full}")["hash"] == block["hash"]
            assert int(client.status()["wal_failures"]) == 0
        alive = {n.name: devnet.processes[n.name].poll() for n in devnet.nodes}
        assert set(alive.values()) == {None}, f"a validator exited: {alive}"
    finally:
        devnet.stop()

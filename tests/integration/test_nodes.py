"""Four real nodes in one process over the in-memory network: ordering, partial co-signing,
a node that stops and catches up, and the API answering bad input without harm."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from carechain.consensus.crypto import PrivateKey, account_id, peer_id
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.policy import Template
from carechain.consensus.poa.messages import Commit
from carechain.consensus.types import Tx, TxSignature
from carechain.node import admission, daemon, peer_messages, pools
from carechain.node.audit.observer import ObserverError, fetch_commits
from carechain.node.audit.replay import replay
from carechain.node.wallet import builders
from carechain.p2p.memory import MemoryNetwork
from carechain.p2p.network import Topic, Verdict
from carechain.tests.integration.cluster import Cluster, eventually, hospital_keys, running_cluster

HOSPITAL = hospital_keys(1)[0]
INSTITUTIONS = (Institution("hospital-a", InstitutionKind.HOSPITAL, HOSPITAL.public_key),)


def _registration(cluster: Cluster) -> tuple[Tx, PrivateKey, PrivateKey]:
    p1, p2 = PrivateKey.generate(), PrivateKey.generate()
    chain_id = cluster.members[0].node.genesis.chain_id
    draft = builders.register_patient(
        chain_id, (p1.public_key, p2.public_key), int(time.time() * 1000) + 3_600_000
    )
    return draft.signed(p1, p2), p1, p2


def _vault_partial(cluster: Cluster, p1: PrivateKey, p2: PrivateKey, data_type: str) -> Tx:
    """A vault for the patient registered with (p1, p2), signed by p1 only: a partial."""
    draft, _ = builders.create_vault(
        cluster.members[0].node.genesis.chain_id,
        account_id(p1.public_key),
        2,
        int(time.time() * 1000) + 3_600_000,
        data_type=data_type,
        template=Template.PATIENT_CONTROLLED,
        team=[HOSPITAL.public_key],
        members={p1.public_key, p2.public_key, HOSPITAL.public_key},
    )
    return draft.signed(p1)


async def _committed(cluster: Cluster, tx: Tx) -> None:
    await eventually(
        lambda: all(m.node.store.tx_location(tx.id) is not None for m in cluster.members)
    )


@pytest.mark.asyncio
async def test_transactions_commit_on_every_node_with_identical_state(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, institutions=INSTITUTIONS) as cluster:
        txs = [_registration(cluster)[0] for _ in range(5)]
        for index, tx in enumerate(txs):
            await cluster.members[index % 4].node.submit(tx)
        for tx in txs:
            await _committed(cluster, tx)
        await eventually(lambda: len({m.node.store.height for m in cluster.members}) == 1)
        heads = {m.node.store.head() for m in cluster.members}
        roots = {m.node.store.state.root for m in cluster.members}
        assert len(heads) == 1
        assert len(roots) == 1
        # committed transactions leave nothing behind in the signature caches
        assert [len(m.node.signatures) for m in cluster.members] == [0, 0, 0, 0]
        # every validator sends the commit it decided to all: a node already past that
        # height drops the others' copies before decoding them
        await eventually(
            lambda: all(m.node.peer_messages.stale_commits > 0 for m in cluster.members)
        )


@pytest.mark.asyncio
async def test_a_partial_waits_for_its_cosignature_then_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_cluster(tmp_path, institutions=INSTITUTIONS) as cluster:
        registration, p1, p2 = _registration(cluster)
        first = cluster.members[0].node
        await first.submit(registration)
        await _committed(cluster, registration)
        patient = account_id(p1.public_key)
        draft, _ = builders.create_vault(
            first.genesis.chain_id,
            patient,
            2,
            int(time.time() * 1000) + 3_600_000,
            data_type="glucose",
            template=Template.PATIENT_CONTROLLED,
            team=[HOSPITAL.public_key],
            members={p1.public_key, p2.public_key, HOSPITAL.public_key},
        )
        partial = draft.signed(p1)
        outcome = await first.submit(partial)
        assert outcome.status == "partial"
        await eventually(lambda: partial.id in cluster.members[3].node.partials.partials)
        # a peer's second copy (direct and gossiped copies both arrive) is not run again
        admitted: list[Tx] = []
        real_admit = pools.admit

        def counting_admit(*args: Any, **kwargs: Any) -> Any:
            admitted.append(args[1])
            return real_admit(*args, **kwargs)

        monkeypatch.setattr(admission, "admit", counting_admit)
        copy = await cluster.members[3].node.submit(partial, gossip=False)
        assert (copy.status, copy.new, admitted) == ("partial", False, [])
        signature = partial.signed_by(p2).signatures
        other = next(s for s in signature if s.public_key == p2.public_key)
        merged = cluster.members[3].node.partials.with_cosignature(partial.id, other)
        assert (await cluster.members[3].node.submit(merged)).status == "pending"
        assert admitted == [merged]  # the co-signed one is
        await _committed(cluster, partial)
        assert all(partial.id not in m.node.partials.partials for m in cluster.members)


@pytest.mark.asyncio
async def test_a_partial_whose_nonce_another_commit_spent_is_dropped_on_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two proposals of one account took the same nonce: once one commits, the other can
    never commit; every node drops it and says why, and a co-signature the ledger refuses
    leaves every pool as it was (they agree)."""
    async with running_cluster(tmp_path, institutions=INSTITUTIONS) as cluster:
        registration, p1, p2 = _registration(cluster)
        first = cluster.members[0].node
        await first.submit(registration)
        await _committed(cluster, registration)
        glucose, cgm = (_vault_partial(cluster, p1, p2, kind) for kind in ("glucose", "cgm"))
        assert glucose.nonce == cgm.nonce
        for partial in (glucose, cgm):
            assert (await first.submit(partial)).status == "partial"
        await eventually(lambda: all(cgm.id in m.node.partials.partials for m in cluster.members))
        # a co-signature the ledger refuses changes no pool
        by_p2 = next(s for s in cgm.signed_by(p2).signatures if s.public_key == p2.public_key)
        cosigned = first.partials.with_cosignature(cgm.id, by_p2)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise TxRejected("expired", "past its expiry")

        monkeypatch.setattr(admission, "admit", refuse)
        with pytest.raises(TxRejected):
            await first.submit(cosigned)
        monkeypatch.undo()
        assert first.partials.partials[cgm.id].tx.signatures == cgm.signatures
        # the glucose vault commits: the CGM proposal's nonce is spent
        await first.submit(glucose.signed_by(p2))
        await _committed(cluster, glucose)
        await eventually(
            lambda: all(cgm.id not in m.node.partials.partials for m in cluster.members)
        )
        assert all(m.node.mempool.rejected.get(cgm.id) == "bad_nonce" for m in cluster.members)


@pytest.mark.asyncio
async def test_a_stopped_node_catches_up_and_the_rest_keep_committing(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        stopped = cluster.members[3]
        home = stopped.node.home
        await cluster.stop_member(stopped)
        txs = [_registration(cluster)[0] for _ in range(3)]
        for tx in txs:
            await cluster.members[0].node.submit(tx)
        for tx in txs:
            await _committed(cluster, tx)
        target = cluster.members[0].node.store.height
        restarted = await cluster.start_node(home)
        await eventually(lambda: restarted.node.store.height >= target, timeout_s=60)
        assert restarted.node.store.block(target) == cluster.members[0].node.store.block(target)


@pytest.mark.asyncio
@pytest.mark.security
async def test_a_validator_that_lost_its_data_folder_signs_again_only_past_the_chain_tip(
    tmp_path: Path,
) -> None:
    """Its WAL (what it signed) is gone with the blocks: it follows the chain without signing
    until a block proposed after its restart is committed, then signs again."""
    async with running_cluster(tmp_path) as cluster:
        first = _registration(cluster)[0]
        await cluster.members[0].node.submit(first)
        await _committed(cluster, first)
        assert not any(m.node.signing.held for m in cluster.members)  # a new home may sign
        wiped = cluster.members[3]
        home, key = wiped.node.home, wiped.node.engine.me
        await cluster.stop_member(wiped)
        shutil.rmtree(home / "data")
        restarted = await cluster.start_node(home)
        held_at_start = restarted.node.signing.held
        assert held_at_start
        tip = cluster.members[0].node.store.height
        while restarted.node.signing.held:
            tx = _registration(cluster)[0]
            await cluster.members[0].node.submit(tx)
            await _committed(cluster, tx)
        resumed = restarted.node.engine.sign_from_height
        assert resumed > tip + 1  # the height in progress at the restart was sat out
        assert all(r.height >= resumed for r in restarted.node.wal.records())

        def signed_by_it() -> bool:
            store = restarted.node.store
            certificate = store.certificate(store.height)
            return any(p.validator == key for p in certificate.precommits)

        while not signed_by_it():
            tx = _registration(cluster)[0]
            await cluster.members[1].node.submit(tx)
            await _committed(cluster, tx)
        assert not (home / "data" / "wal" / "NEVER_SIGNED").exists()


# --- the API ---------------------------------------------------------------------------------


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        text = await response.read()
        if response.content_type == "application/json":
            return response.status, json.loads(text)
        return response.status, text


@pytest.mark.asyncio
async def test_every_route_is_documented_and_answers(tmp_path: Path) -> None:
    async with (
        running_cluster(tmp_path, institutions=INSTITUTIONS) as cluster,
        aiohttp.ClientSession() as session,
    ):
        base = cluster.members[0].url
        status, document = await _call(session, "GET", f"{base}/openapi.json")
        assert status == 200
        assert document["openapi"].startswith("3.")
        registration, p1, _ = _registration(cluster)
        status, body = await _call(
            session, "POST", f"{base}/v1/txs", json={"tx": registration.encode().hex()}
        )
        assert (status, body["status"]) == (202, "pending")
        await _committed(cluster, registration)
        address = cluster.members[0].node.store.height
        patient = account_id(p1.public_key).hex()
        checks = {
            ("get", "/v1/status"): ("/v1/status", 200, "chain_id"),
            ("get", "/v1/genesis"): ("/v1/genesis", 200, "validators"),
            ("get", "/v1/txs/{id}"): (f"/v1/txs/{registration.id.hex()}", 200, "status"),
            ("get", "/v1/partials"): ("/v1/partials", 200, "partials"),
            ("get", "/v1/accounts/{address}"): (f"/v1/accounts/{patient}", 200, "nonce"),
            ("get", "/v1/state/{table}"): ("/v1/state/account", 200, "entries"),
            ("get", "/v1/state/{table}/{key}"): (f"/v1/state/account/{patient}", 200, "value"),
            ("get", "/v1/blocks/{height}"): (f"/v1/blocks/{address}", 200, "certificate"),
            ("get", "/v1/emergencies"): ("/v1/emergencies", 200, "emergencies"),
            ("get", "/v1/institutions"): ("/v1/institutions", 200, "institutions"),
            ("get", "/v1/vaults/{id}/records"): (f"/v1/vaults/{'00' * 20}/records", 200, "records"),
            ("get", "/v1/vaults/{id}/grants"): (f"/v1/vaults/{'00' * 20}/grants", 200, "grants"),
            ("get", "/v1/vaults/{id}/receipts"): (
                f"/v1/vaults/{'00' * 20}/receipts",
                200,
                "receipts",
            ),
            ("get", "/metrics"): ("/metrics", 200, None),
            ("get", "/openapi.json"): ("/openapi.json", 200, "paths"),
        }
        for (method, template), (path, expected, field) in checks.items():
            assert method in document["paths"][template], template
            status, body = await _call(session, method.upper(), base + path)
            assert status == expected, (path, body)
            if field is not None:
                assert field in body, (path, body)
        status, body = await _call(session, "POST", f"{base}/v1/blobs", data=b"ciphertext")
        assert status == 201
        status, blob = await _call(session, "GET", f"{base}/v1/blobs/{body['cid']}")
        assert (status, blob) == (200, b"ciphertext")
        status, missing = await _call(session, "GET", f"{base}/v1/vaults/{'00' * 20}")
        assert (status, missing["error"]) == (404, "not_found")
        assert "post" in document["paths"]["/v1/txs/batch"]
        fresh = [_registration(cluster)[0] for _ in range(3)]
        status, body = await _call(
            session,
            "POST",
            f"{base}/v1/txs/batch",
            json={"txs": [fresh[0].encode().hex(), "zz", registration.encode().hex(),
                          fresh[1].encode().hex(), fresh[2].encode().hex()]},
        )  # fmt: skip
        assert status == 200
        assert [r.get("status", r.get("error")) for r in body["results"]] == [
            "pending", "bad_hex", "committed", "pending", "pending"
        ]  # fmt: skip
        assert body["results"][3]["id"] == fresh[1].id.hex()
        for tx in fresh:
            await _committed(cluster, tx)
        # a large batch has its signatures checked in worker processes: same verdicts
        many = [_registration(cluster)[0] for _ in range(40)]
        forged = many[7].with_signature(TxSignature(many[7].signatures[0].public_key, bytes(64)))
        many[7] = forged
        status, body = await _call(
            session, "POST", f"{base}/v1/txs/batch", json={"txs": [t.encode().hex() for t in many]}
        )
        assert status == 200
        outcomes = [r.get("status", r.get("error")) for r in body["results"]]
        assert outcomes == ["pending"] * 7 + ["bad_signature"] + ["pending"] * 32
        if (os.cpu_count() or 1) > 1:
            assert cluster.members[0].node.verifier.verified == 39
        for tx in many[:7]:
            await _committed(cluster, tx)
        status, body = await _call(session, "POST", f"{base}/v1/txs/batch", json={"txs": []})
        assert (status, body["error"]) == (400, "bad_field")


@pytest.mark.asyncio
async def test_bad_input_gets_a_4xx_with_a_reason_and_the_node_keeps_running(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster, aiohttp.ClientSession() as session:
        node = cluster.members[0]
        base = node.url
        good, p1, p2 = _registration(cluster)
        forged = good.with_signature(
            good.signatures[0].__class__(good.signatures[0].public_key, bytes(64))
        )
        other_chain = Tx(
            "carechain-other", good.kind, good.account, good.nonce, good.expiry_ms, good.body
        )
        other_chain = other_chain.signed_by(p1).signed_by(p2)
        cases: list[tuple[dict[str, Any], int, str]] = [
            (
                {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
                400,
                "bad_json",
            ),
            ({"json": {"tx": good.encode().hex(), "extra": 1}}, 400, "unknown_field"),
            ({"json": {}}, 400, "missing_field"),
            ({"json": {"tx": "zz"}}, 400, "bad_hex"),
            ({"json": {"tx": "c1"}}, 400, "bad_tx"),
            ({"json": {"tx": forged.encode().hex()}}, 400, "bad_signature"),
            ({"json": {"tx": other_chain.encode().hex()}}, 400, "wrong_chain"),
            (
                {
                    "data": io.BytesIO(b"x" * (5 * 1024 * 1024)),
                    "headers": {"Content-Type": "application/json"},
                },
                413,
                "too_large",
            ),
        ]
        for kwargs, expected_status, code in cases:
            status, body = await _call(session, "POST", f"{base}/v1/txs", **kwargs)
            assert (status, body["error"]) == (expected_status, code), (code, body)
            assert body["message"]
        status, body = await _call(
            session,
            "POST",
            f"{base}/v1/partials/{'ab' * 32}/signatures",
            json={"public_key": "00" * 32, "signature": "00" * 64},
        )
        assert (status, body["error"]) == (400, "unknown_partial")
        status, body = await _call(session, "GET", f"{base}/v1/blocks/999999")
        assert (status, body["error"]) == (404, "not_found")
        # found by the API fuzzer (tests/fuzz/test_api.py): a superscript two is a digit to
        # str.isdigit() but not to int(), and was a 500
        status, body = await _call(session, "GET", f"{base}/v1/blocks/%C2%B2")
        assert (status, body["error"]) == (400, "bad_field")
        missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        status, body = await _call(session, "GET", f"{base}/v1/blobs/{missing}")
        assert (status, body["error"]) == (404, "blob_not_found")
        async with session.options(f"{base}/v1/txs/batch") as refused:
            assert (refused.status, refused.headers["Allow"]) == (405, "POST")
        crowded = cluster.members[0].node
        crowded.mempool.txs_max = len(crowded.mempool)  # a busy node: full until the next block
        async with session.post(f"{base}/v1/txs", json={"tx": good.encode().hex()}) as busy:
            assert busy.status == 503
            assert busy.headers["Retry-After"] == "1"
            assert (await busy.json())["error"] == "pool_full"
        crowded.mempool.txs_max = 50_000
        status, body = await _call(
            session, "POST", f"{base}/v1/txs", json={"tx": good.encode().hex()}
        )
        assert status == 202, "the node still accepts good transactions"
        await _committed(cluster, good)


@pytest.mark.asyncio
async def test_the_event_stream_reports_new_blocks(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster, aiohttp.ClientSession() as session:
        base = cluster.members[1].url
        async with session.get(f"{base}/v1/events") as response:
            tx, _, _ = _registration(cluster)
            await cluster.members[1].node.submit(tx)
            while True:
                line = await asyncio.wait_for(response.content.readline(), 30)
                event = json.loads(line)
                if event["event"] != "block" or event["tx_count"] == 0:
                    continue
                txs = await (await session.get(f"{base}/v1/blocks/{event['height']}/txs")).json()
                assert len(txs["txs"]) == event["tx_count"]
                assert txs["hash"] == event["hash"]
                if tx.id.hex() in txs["txs"]:
                    break
        assert event["height"] >= 1
        assert set(event) == {"event", "height", "hash", "tx_count", "time_ms"}


@pytest.mark.asyncio
async def test_metrics_show_block_intervals_refusals_p2p_traffic_and_api_latency(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster, aiohttp.ClientSession() as session:
        member = cluster.members[1]
        base = member.url
        await session.get(f"{base}/metrics")  # a first scrape: the next reads what followed
        tx, _, _ = _registration(cluster)
        forged = dataclasses.replace(tx, signatures=(TxSignature(bytes(32), bytes(64)),))
        refused = await session.post(f"{base}/v1/txs", json={"tx": forged.encode().hex()})
        assert refused.status == 400
        await member.node.submit(tx)
        await _committed(cluster, tx)
        height = member.node.store.height
        await eventually(lambda: member.node.store.height >= height + 2)
        await session.get(f"{base}/v1/status")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(
                await (await session.get(f"{base}/metrics")).text()
            )
            for s in family.samples
        }

    def total(name: str, label: tuple[str, str]) -> float:
        return sum(v for (n, labels), v in samples.items() if n == name and label in labels)

    assert samples[("carechain_block_interval_seconds_count", ())] >= 2
    assert total("carechain_tx_rejections_total", ("where", "admission")) >= 1
    assert total("carechain_p2p_sent_bytes_total", ("lane", "consensus")) > 0
    assert total("carechain_p2p_received_bytes_total", ("lane", "consensus")) > 0
    assert total("carechain_api_request_seconds_count", ("route", "/v1/status")) == 1
    assert any(name == "carechain_p2p_dropped_total" for name, _ in samples)


@pytest.mark.asyncio
async def test_a_client_leaving_the_event_stream_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_cluster(tmp_path) as cluster:
        node = cluster.members[1].node
        for _ in range(3):
            async with aiohttp.ClientSession() as session:
                response = await session.get(f"{cluster.members[1].url}/v1/events")
                await eventually(lambda: len(node.subscribers) == 1)
                response.close()  # the client goes away mid-stream
            deadline = time.monotonic() + 30
            while node.subscribers:  # writes to the gone client, until the node sees it left
                assert time.monotonic() < deadline, "the stream never noticed the client left"
                node.publish({"event": "block", "height": 0})
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.asyncio
async def test_a_node_admits_only_the_observers_its_config_lists(tmp_path: Path) -> None:
    auditor, stranger = PrivateKey(b"\x51" * 32), PrivateKey(b"\x52" * 32)
    admitted = (peer_id(auditor.public_key),)
    async with running_cluster(tmp_path, observers=admitted) as cluster:
        tx = _registration(cluster)[0]
        await cluster.members[0].node.submit(tx)
        await _committed(cluster, tx)
        hospital = cluster.members[0].node
        watcher = MemoryNetwork(cluster.hub, admitted[0], allowed={hospital.node_id})
        outsider = MemoryNetwork(
            cluster.hub, peer_id(stranger.public_key), allowed={hospital.node_id}
        )
        for network in (watcher, outsider):
            await network.start()
        assert admitted[0] in hospital.network.peers()
        assert outsider.local_id not in hospital.network.peers()
        source = await fetch_commits(watcher, hospital.node_id)
        location = hospital.store.tx_location(tx.id)
        assert location is not None
        assert source.height >= location[0]
        report = replay(source, hospital.genesis, workers=1, compare_state=False)
        assert report.blocks == source.height
        with pytest.raises(ObserverError, match=r"p2p\.observers"):
            await fetch_commits(outsider, hospital.node_id)


@pytest.mark.asyncio
async def test_full_nodes_follow_the_chain_over_gossip_and_their_transactions_commit(
    tmp_path: Path,
) -> None:
    """A clinic (admitted by the validators) and a pharmacy (admitted only by the clinic) run
    non-validator nodes: blocks reach both over gossip, a transaction sent at the pharmacy
    travels pharmacy -> clinic -> validators and commits."""
    clinic_key, pharmacy_key = PrivateKey(b"\x61" * 32), PrivateKey(b"\x62" * 32)
    clinic_id, pharmacy_id = peer_id(clinic_key.public_key), peer_id(pharmacy_key.public_key)
    async with running_cluster(tmp_path, observers=(clinic_id,)) as cluster:
        # no full node linked yet: the validators pass partials to each other directly only
        published: list[Topic] = []
        for member in cluster.members:
            real_publish = member.node.network.publish

            async def counting(topic: Topic, payload: bytes, real: Any = real_publish) -> None:
                published.append(topic)
                await real(topic, payload)

            member.node.network.publish = counting  # type: ignore[method-assign]
        registration, p1, p2 = _registration(cluster)
        await cluster.members[0].node.submit(registration)
        await _committed(cluster, registration)
        lone = _vault_partial(cluster, p1, p2, "glucose")
        assert (await cluster.members[0].node.submit(lone)).status == "partial"
        await eventually(lambda: all(lone.id in m.node.partials.partials for m in cluster.members))
        assert Topic.PARTIAL not in published
        clinic = (await cluster.start_full_node("clinic", clinic_key, (pharmacy_id,))).node
        pharmacy = (await cluster.start_full_node("pharmacy", pharmacy_key, (clinic_id,))).node
        assert pharmacy.network.peers() == [clinic_id]
        validators = cluster.members[:4]
        first = _registration(cluster)[0]
        await validators[0].node.submit(first)
        await eventually(lambda: pharmacy.store.tx_location(first.id) is not None)
        second = _registration(cluster)[0]
        outcome = await pharmacy.submit(second)
        assert outcome.status == "pending"
        await _committed(cluster, second)
        await eventually(lambda: pharmacy.store.height == validators[0].node.store.height)
        assert clinic.catchup.gossip_blocks > 0
        assert pharmacy.catchup.gossip_blocks > 0
        height = pharmacy.store.height
        heads = {
            next(iter(n.store.blocks(height, height)))[0].block_hash
            for n in (clinic, pharmacy, validators[0].node)
        }
        assert len(heads) == 1, "the full nodes hold the validators' chain"
        # with full nodes linked, a partial sent to any validator reaches them over gossip
        # (a patient's agent there co-signs it)
        await eventually(
            lambda: all(clinic_id in m.node.network.peers() for m in cluster.members[:4])
        )
        linked = _vault_partial(cluster, p1, p2, "blood_pressure")
        assert (await validators[3].node.submit(linked)).status == "partial"
        await eventually(lambda: linked.id in pharmacy.partials.partials)
        assert Topic.PARTIAL in published


@pytest.mark.asyncio
async def test_a_transaction_admitted_with_no_validator_linked_is_sent_when_one_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clinic's node admits a transaction while cut off from every validator (its broadcast
    reaches nobody); when the links come up it sends it on at once, not at the re-send after
    RESEND_AFTER_MS (made an hour here, so only the new links can carry it)."""
    monkeypatch.setattr(peer_messages, "RESEND_AFTER_MS", 3_600_000)
    clinic_key = PrivateKey(b"\x63" * 32)
    clinic_id = peer_id(clinic_key.public_key)
    async with running_cluster(tmp_path, observers=(clinic_id,)) as cluster:
        validators = [m.node for m in cluster.members]
        cluster.hub.cut = {frozenset({clinic_id, v.node_id}) for v in validators}
        clinic = (await cluster.start_full_node("clinic", clinic_key)).node
        assert clinic.network.peers() == []
        registration = _registration(cluster)[0]
        assert (await clinic.submit(registration)).status == "pending"
        await asyncio.sleep(daemon.FULL_NODE_POLL_S + 0.5)  # a housekeeping round while cut off
        assert all(registration.id not in v.mempool.txs for v in validators)
        cluster.hub.heal()
        await _committed(cluster, registration)


@pytest.mark.asyncio
async def test_a_full_node_rejects_forged_gossip_and_ignores_stale_gossip(tmp_path: Path) -> None:
    clinic_key = PrivateKey(b"\x61" * 32)
    async with running_cluster(tmp_path, observers=(peer_id(clinic_key.public_key),)) as cluster:
        clinic = (await cluster.start_full_node("clinic", clinic_key)).node
        tx = _registration(cluster)[0]
        await cluster.members[0].node.submit(tx)
        await eventually(lambda: clinic.store.tx_location(tx.id) is not None)
        peer = cluster.members[0].node.node_id
        height = clinic.store.height
        block, certificate = next(iter(clinic.store.blocks(height, height)))
        stale = block.block_hash + Commit(block, certificate).encode()
        forged_block = dataclasses.replace(
            block, header=dataclasses.replace(block.header, height=height + 1)
        )
        forged = forged_block.block_hash + Commit(forged_block, certificate).encode()
        misnamed = bytes(32) + Commit(block, certificate).encode()
        fresh = _registration(cluster)[0]
        wrong = dataclasses.replace(fresh.signatures[0], signature=bytes(64))
        forged_tx = dataclasses.replace(fresh, signatures=(wrong, *fresh.signatures[1:]))
        cases = [
            (Topic.TX, b"\xc1 not a transaction", Verdict.REJECT),
            (Topic.TX, forged_tx.encode(), Verdict.REJECT),
            (Topic.TX, tx.encode(), Verdict.IGNORE),  # committed already
            (Topic.BLOCK, b"\xc1 not a block", Verdict.REJECT),
            (Topic.BLOCK, forged, Verdict.REJECT),
            (Topic.BLOCK, misnamed, Verdict.REJECT),
            (Topic.BLOCK, stale, Verdict.IGNORE),
        ]
        for topic, payload, expected in cases:
            assert await clinic.on_gossip(peer, topic, payload) is expected, (topic, expected)
        assert clinic.store.height >= height

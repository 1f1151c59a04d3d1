"""The auditor's replay against a real chain and every tampering an attacker could try on a copy
of it: each is caught, at the right height, with the exact failure."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from carechain.cli.main import cli
from carechain.config.genesis import save_genesis
from carechain.consensus.crypto import PrivateKey, encrypt_stream
from carechain.consensus.ledger.bodies import PutRecord
from carechain.consensus.ledger.records import ValidatorAction
from carechain.consensus.types import (
    Block,
    CommitCertificate,
    CommitSignature,
    Validator,
    merkle_root,
)
from carechain.node.audit.replay import AuditFailure, BlobCheck, check_blobs, replay
from carechain.node.wallet import builders
from carechain.storage import schema
from carechain.storage.blobs.backends import FsObjects
from carechain.storage.blobs.store import CHUNK_BYTES, BlobStore, content_id_of, from_bytes
from carechain.storage.chain import ChainStore
from carechain.storage.kv import LevelKV, WriteBatch
from carechain.tests.chain_fixture import COMMITTEE, certify_by, committee_chain, committee_genesis
from carechain.tests.ledger_world import CHAIN_ID, World
from carechain.tests.strategies import deterministic_key

BLOCKS = 8


def _chain(path: Path) -> None:
    store = ChainStore.open(path, committee_genesis())
    try:
        committee_chain(store, BLOCKS)
    finally:
        store.close()


def _rewrite(path: Path, change: Callable[[LevelKV], WriteBatch]) -> None:
    kv = LevelKV(path, create=False)
    try:
        kv.write(change(kv))
    finally:
        kv.close()


def _replay_failure(path: Path) -> AuditFailure:
    """Replay the chain at `path`, which must fail; the failure it reports."""
    store = ChainStore(LevelKV(path, create=False))
    try:
        with pytest.raises(AuditFailure) as caught:
            replay(store, committee_genesis(), workers=1)
    finally:
        store.close()
    return caught.value


def _block(kv: LevelKV, height: int) -> Block:
    raw = kv.get(schema.block_key(height))
    assert raw is not None
    return Block.decode(raw)


def _certificate(kv: LevelKV, height: int) -> CommitCertificate:
    raw = kv.get(schema.certificate_key(height))
    assert raw is not None
    return CommitCertificate.decode(raw)


def _put(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(key, value)
    return batch


def flip_a_tx_byte(kv: LevelKV) -> WriteBatch:
    block = _block(kv, 3)
    tx = block.txs[0]
    forged = dataclasses.replace(tx, expiry_ms=tx.expiry_ms + 1)  # one field, same size
    return _put(
        schema.block_key(3), dataclasses.replace(block, txs=(forged, *block.txs[1:])).encode()
    )


def drop_a_certificate_signature(kv: LevelKV) -> WriteBatch:
    certificate = _certificate(kv, 4)
    weaker = dataclasses.replace(certificate, precommits=certificate.precommits[:2])
    return _put(schema.certificate_key(4), weaker.encode())


def swap_two_blocks(kv: LevelKV) -> WriteBatch:
    batch = WriteBatch()
    for height, other in ((5, 6), (6, 5)):
        raw = kv.get(schema.block_key(other))
        assert raw is not None
        batch.put(schema.block_key(height), raw)
    return batch


def change_a_state_root(kv: LevelKV) -> WriteBatch:
    block = _block(kv, 2)
    header = dataclasses.replace(block.header, state_root=b"\x01" * 32)
    return _put(schema.block_key(2), dataclasses.replace(block, header=header).encode())


def forge_a_block_with_a_real_looking_certificate(kv: LevelKV) -> WriteBatch:
    """An altered block with a certificate signed by keys that are not the validators'."""
    block = _block(kv, 7)
    header = dataclasses.replace(block.header, time_ms=block.header.time_ms + 1)
    forged = dataclasses.replace(block, header=header)
    outsiders = [deterministic_key(777 + i) for i in range(3)]
    batch = _put(schema.block_key(7), forged.encode())
    batch.put(schema.certificate_key(7), certify_by(forged, outsiders).encode())
    return batch


def change_a_state_entry(kv: LevelKV) -> WriteBatch:
    key, value = next(iter(kv.iterate(schema.STATE_PREFIX + bytes([2]))))  # an account
    return _put(key, value[:-1] + bytes([value[-1] ^ 1]))


TAMPERING = [
    ("flip a transaction byte", flip_a_tx_byte, 3, "transaction root does not match"),
    (
        "drop a certificate signature",
        drop_a_certificate_signature,
        4,
        "has 2 of 4 validator signatures",
    ),
    ("swap two blocks", swap_two_blocks, 5, "the block says height 6"),
    ("change a state root", change_a_state_root, 2, "commit certificate is for block"),
    (
        "certificate by outsiders",
        forge_a_block_with_a_real_looking_certificate,
        7,
        "is not a validator at this height",
    ),
    ("change a state entry", change_a_state_entry, BLOCKS, "first differing key: account"),
]


def test_an_untouched_chain_verifies(tmp_path: Path) -> None:
    _chain(tmp_path / "chain")
    store = ChainStore(LevelKV(tmp_path / "chain", create=False))
    try:
        report = replay(store, committee_genesis(), workers=2)
    finally:
        store.close()
    assert (report.blocks, report.txs, report.signatures) == (BLOCKS, 2 * BLOCKS, 4 * BLOCKS)


@pytest.mark.parametrize(
    ("case", "tamper", "height", "problem"), TAMPERING, ids=[t[0] for t in TAMPERING]
)
def test_tampering_is_caught_where_it_happened(
    tmp_path: Path, case: str, tamper: Callable[[LevelKV], WriteBatch], height: int, problem: str
) -> None:
    _chain(tmp_path / "chain")
    _rewrite(tmp_path / "chain", tamper)
    failure = _replay_failure(tmp_path / "chain")
    assert failure.height == height, str(failure)
    assert problem in str(failure), str(failure)


def test_the_cli_reports_json_and_exit_codes(tmp_path: Path) -> None:
    _chain(tmp_path / "chain")
    save_genesis(tmp_path / "genesis.json", committee_genesis())
    arguments = [
        "audit",
        "replay",
        "--data",
        str(tmp_path / "chain"),
        "--genesis",
        str(tmp_path / "genesis.json"),
        "--json",
    ]
    good = CliRunner().invoke(cli, arguments)
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["blocks"] == BLOCKS
    _rewrite(tmp_path / "chain", drop_a_certificate_signature)
    bad = CliRunner().invoke(cli, arguments)
    assert bad.exit_code == 1
    assert json.loads(bad.output)["height"] == 4
    assert len(COMMITTEE) == 4


def _home_with_chain(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    _chain(home / "data" / "chain")
    save_genesis(home / "genesis.json", committee_genesis())
    return home


def test_archives_export_verify_and_import(tmp_path: Path) -> None:
    home = _home_with_chain(tmp_path)
    archive = tmp_path / "chain.archive"
    runner = CliRunner()
    exported = runner.invoke(cli, ["export", "--home", str(home), "--out", str(archive)])
    assert exported.exit_code == 0, exported.output
    written = archive.read_bytes()
    again = runner.invoke(cli, ["export", "--home", str(home), "--out", str(archive)])
    assert again.exit_code == 3, again.output  # an existing file is never overwritten
    assert "exists already" in again.output
    assert archive.read_bytes() == written
    verified = runner.invoke(cli, ["audit", "replay", "--archive", str(archive), "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["blocks"] == BLOCKS
    imported = runner.invoke(
        cli, ["import", "--archive", str(archive), "--home", str(tmp_path / "copy")]
    )
    assert imported.exit_code == 0, imported.output
    again = runner.invoke(cli, ["audit", "replay", "--home", str(tmp_path / "copy"), "--json"])
    assert json.loads(again.output)["state_root"] == json.loads(verified.output)["state_root"]
    truncated = tmp_path / "truncated.archive"
    truncated.write_bytes(archive.read_bytes()[:-10])
    broken = runner.invoke(cli, ["audit", "replay", "--archive", str(truncated)])
    assert broken.exit_code == 3
    assert "truncated" in broken.output
    tampered = tmp_path / "tampered.archive"
    data = bytearray(archive.read_bytes())
    data[-200] ^= 1  # inside the last block
    tampered.write_bytes(bytes(data))
    refused = runner.invoke(
        cli, ["import", "--archive", str(tampered), "--home", str(tmp_path / "home2")]
    )
    assert refused.exit_code in (1, 3), refused.output  # fails verification or decoding
    assert not (tmp_path / "home2" / "data" / "chain").exists(), "nothing is written"


def test_the_report_shows_participation_and_round_changes(tmp_path: Path) -> None:
    home = _home_with_chain(tmp_path)
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = report["participation"]
    assert len(rows) == 4
    assert sorted(r["signed"] for r in rows.values()) == [0, BLOCKS, BLOCKS, BLOCKS]
    assert sorted(r["missed"] for r in rows.values()) == [0, 0, 0, BLOCKS]
    assert report["late_votes_kept"] is True
    assert sum(r["proposed"] for r in rows.values()) == BLOCKS
    assert report["heights_with_round_changes"] == 0
    assert report["evidence"] == []


def _late_vote(home: Path, height: int, signer: PrivateKey) -> None:
    """The fourth validator's precommit for `height`, signed by `signer`, kept as late."""
    store = ChainStore.open(home / "data" / "chain", committee_genesis())
    try:
        certificate = store.certificate(height)
        forged = certify_by(store.block(height), [signer]).precommits[0]
        late = CommitSignature(COMMITTEE[3].public_key, forged.signature)
        assert store.record_late(certificate, late)
        assert not store.record_late(certificate, late), "kept once"
    finally:
        store.close()


def test_a_late_precommit_the_node_kept_counts_as_late_not_missed(tmp_path: Path) -> None:
    home = _home_with_chain(tmp_path)
    _late_vote(home, 2, COMMITTEE[3])
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    fourth = json.loads(result.output)["participation"][COMMITTEE[3].public_key.hex()]
    assert (fourth["signed"], fourth["late"], fourth["missed"]) == (0, 1, BLOCKS - 1)
    # an archive keeps certificates only: it says it cannot tell late from missed
    archive = tmp_path / "chain.archive"
    assert runner.invoke(cli, ["export", "--home", str(home), "--out", str(archive)]).exit_code == 0
    from_archive = runner.invoke(cli, ["audit", "report", "--archive", str(archive)])
    assert from_archive.exit_code == 0, from_archive.output
    assert "missed counts late votes too" in " ".join(from_archive.output.split())


def test_a_late_precommit_that_does_not_verify_fails_the_audit(tmp_path: Path) -> None:
    home = _home_with_chain(tmp_path)
    _late_vote(home, 3, COMMITTEE[0])  # the fourth validator's name, another's signature
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home)])
    assert result.exit_code == 1, result.output
    assert "height 3" in result.output
    assert "late precommit by v3 does not verify" in " ".join(result.output.split())


def test_a_forged_governance_change_is_caught_even_with_a_real_certificate(tmp_path: Path) -> None:
    """Three validators certify a block holding a governance change only one of them signed:
    the certificate verifies, but re-executing the block does not."""
    _chain(tmp_path / "chain")

    def forge(kv: LevelKV) -> WriteBatch:
        block = _block(kv, BLOCKS)
        newcomer = deterministic_key(888)
        draft = builders.change_validator(
            block.header.chain_id,
            1,
            block.header.time_ms + 10**6,
            ValidatorAction.ADD,
            Validator("intruder", newcomer.public_key, newcomer.public_key, 100),
        )
        forged_tx = draft.signed(COMMITTEE[0])  # governance needs 3 of 4
        txs = (*block.txs, forged_tx)
        header = dataclasses.replace(
            block.header, tx_root=merkle_root([t.witness_hash for t in txs])
        )
        forged = dataclasses.replace(block, header=header, txs=txs)
        batch = _put(schema.block_key(BLOCKS), forged.encode())
        batch.put(schema.certificate_key(BLOCKS), certify_by(forged, COMMITTEE[:3]).encode())
        return batch

    _rewrite(tmp_path / "chain", forge)
    failure = _replay_failure(tmp_path / "chain")
    assert failure.height == BLOCKS
    assert "policy_not_satisfied" in str(failure)


def test_a_replaced_blob_is_caught(tmp_path: Path) -> None:
    world = World()
    vault = world.create_vault()
    blobs_folder = tmp_path / "blobs"
    blobs = BlobStore(FsObjects(blobs_folder))
    plaintext = b"imaging study " * 200_000  # 2.8 MB: a UnixFS tree of three leaves
    ciphertext = b"".join(encrypt_stream(bytes(32), [plaintext]))
    content_id = asyncio.run(blobs.put(from_bytes(ciphertext)))
    body = world.record_draft(vault).body
    assert isinstance(body, PutRecord)
    body = dataclasses.replace(
        body, content_id=content_id, inline_ciphertext=b"", size_bytes=len(plaintext)
    )
    draft = builders.TxDraft(
        CHAIN_ID, "record.put", vault, world.nonce(vault), world.expiry(), body
    )
    world.block(draft.signed(world.p1, world.hospital["A"]))
    assert asyncio.run(check_blobs(world.store, blobs)) == BlobCheck(checked=1)
    # a store that never held it reports it missing, apart from damage
    elsewhere = BlobStore(FsObjects(tmp_path / "other-hospital"))
    assert asyncio.run(check_blobs(world.store, elsewhere)) == BlobCheck(missing=[content_id])
    first_chunk = content_id_of(ciphertext[:CHUNK_BYTES])
    path = blobs_folder / "chunks" / first_chunk[-2:] / first_chunk
    path.write_bytes(b"replaced" + path.read_bytes()[8:])
    found = asyncio.run(check_blobs(world.store, blobs))
    assert (found.checked, found.missing, len(found.broken)) == (0, [], 1)
    assert "does not match its content id" in found.broken[0]
    path.unlink()  # a leaf lost while the blob's root node stays: damage, not "never held"
    found = asyncio.run(check_blobs(world.store, blobs))
    assert (found.checked, found.missing, len(found.broken)) == (0, [], 1)


def test_a_blob_of_another_length_than_its_record_says_is_caught(tmp_path: Path) -> None:
    """The record's size is the plaintext's; its blob must be exactly the ciphertext of that
    many bytes: a store holding a longer or shorter blob under the id is damage."""
    world = World()
    vault = world.create_vault()
    blobs = BlobStore(FsObjects(tmp_path / "blobs"))
    plaintext = b"ECG " * 300_000
    ciphertext = b"".join(encrypt_stream(bytes(32), [plaintext]))
    content_id = asyncio.run(blobs.put(from_bytes(ciphertext)))
    body = world.record_draft(vault).body
    assert isinstance(body, PutRecord)
    body = dataclasses.replace(
        body, content_id=content_id, inline_ciphertext=b"", size_bytes=len(plaintext) + 1
    )
    draft = builders.TxDraft(
        CHAIN_ID, "record.put", vault, world.nonce(vault), world.expiry(), body
    )
    world.block(draft.signed(world.p1, world.hospital["A"]))
    found = asyncio.run(check_blobs(world.store, blobs))
    assert (found.checked, found.missing, len(found.broken)) == (0, [], 1)
    assert f"describes {len(ciphertext)} bytes" in found.broken[0]

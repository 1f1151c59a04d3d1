"""The consensus WAL file: round trips, torn tails cut, middle damage refused, rotation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from carechain.consensus.poa.messages import WalKind, WalRecord
from carechain.storage.wal import ConsensusWal, WalCorruptError, mark_never_signed


def _record(height: int, index: int) -> WalRecord:
    return WalRecord(WalKind.VOTE, height, index, f"payload {height}/{index}".encode() * 3)


def _written(folder: Path, height: int = 7, count: int = 5) -> tuple[Path, list[WalRecord]]:
    wal = ConsensusWal(folder)
    wal.rotate(height)
    records = [_record(height, i) for i in range(count)]
    for record in records:
        wal.append(record)
    wal.close()
    (path,) = folder.glob("wal-*.log")
    return path, records


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    _, records = _written(tmp_path)
    reopened = ConsensusWal(tmp_path)
    assert reopened.records(7) == records
    assert reopened.repairs == []


def test_empty_file_and_empty_folder(tmp_path: Path) -> None:
    assert ConsensusWal(tmp_path).records() == []
    (tmp_path / f"wal-{3:020d}.log").write_bytes(b"")
    assert ConsensusWal(tmp_path).records() == []


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_a_truncated_tail_is_cut_and_reported(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    path, records = _written(tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])
    with caplog.at_level(logging.WARNING, logger="carechain.wal"):
        reopened = ConsensusWal(tmp_path)
    assert reopened.records() == records[:-1]
    assert "torn tail" in caplog.text
    assert len(reopened.repairs) == 1
    reopened.append(_record(7, 99))  # the log continues cleanly after the cut
    reopened.close()
    assert ConsensusWal(tmp_path).records() == [*records[:-1], _record(7, 99)]


def test_a_flipped_byte_in_the_last_record_is_cut(tmp_path: Path) -> None:
    path, records = _written(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    reopened = ConsensusWal(tmp_path)
    assert reopened.records() == records[:-1]
    assert reopened.repairs


def test_a_flipped_byte_in_a_middle_record_is_an_error(tmp_path: Path) -> None:
    path, _ = _written(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="valid records follow it"):
        ConsensusWal(tmp_path)
    assert path.read_bytes() == bytes(data), "nothing is changed when refusing"


def test_garbage_after_the_last_record_is_cut(tmp_path: Path) -> None:
    path, records = _written(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x00\x01garbage")
    assert ConsensusWal(tmp_path).records() == records


def test_rotation_keeps_the_previous_height_only(tmp_path: Path) -> None:
    wal = ConsensusWal(tmp_path)
    for height in (1, 2, 3, 4):
        wal.rotate(height)
        wal.append(_record(height, 0))
    wal.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"wal-{3:020d}.log", f"wal-{4:020d}.log"]
    assert [r.height for r in ConsensusWal(tmp_path).records()] == [3, 4]


def test_the_never_signed_marker_is_read_and_forgotten(tmp_path: Path) -> None:
    folder = tmp_path / "wal"
    assert not ConsensusWal(folder).never_signed  # a folder that appeared from nowhere
    mark_never_signed(folder)
    wal = ConsensusWal(folder)
    marked = wal.never_signed
    assert marked
    wal.forget_never_signed()
    assert (wal.never_signed, ConsensusWal(folder).never_signed) == (False, False)

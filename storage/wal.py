"""The consensus write-ahead log: what this validator signed, durable before it is sent.

One file per height (`wal-<height>.log`), append-only. Each record is framed as
`magic:2 | length:4 | crc32(length, payload):4 | payload`. The node appends the engine's
`WriteWal` records and calls `sync()` (flush + fsync) before it sends anything they guard.

On open, every file is read back. A damaged *tail* (a torn write after a crash: a short
header, a record cut short, or a last record whose checksum fails) is cut off, and a warning
says so. Damage *followed by valid records* cannot come from a crash; it is reported as an
error and never skipped, because replaying around it could make the validator sign twice.

A new home's WAL folder holds a marker, `NEVER_SIGNED`, written by `carechain init` and the
testnet generator: the validator key beside it has signed nothing on this chain yet. The node
removes it once it holds a block. A node that finds neither blocks nor the marker has lost
its data folder (wiped, or a disk replaced): what its key signed before is unknown, so the
node must not sign until the chain has moved past anything it could have signed (see
`Node`, "signing history").
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Final

from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.poa.messages import WalRecord

MAGIC: Final = b"\xcc\xc1"
HEADER: Final = struct.Struct(">2sII")
# The largest record any chain's genesis allows; a node bounds its WAL by its own chain's
# (`EncodedLimits.wal_record_bytes`).
RECORD_BYTES_MAX: Final = LIMITS_AT_CAP.wal_record_bytes
_NAME: Final = re.compile(r"^wal-(\d{20})\.log$")
NEVER_SIGNED: Final = "NEVER_SIGNED"


def mark_never_signed(folder: Path) -> None:
    """Mark a new home's WAL folder: its validator key has signed nothing yet."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NEVER_SIGNED).write_text(
        "Written when this home was created: its validator key had signed nothing on this\n"
        "chain. The node removes this file once it holds a block. Never copy it into another\n"
        "home: a node that has it signs from the first height it meets.\n"
    )


log = logging.getLogger("carechain.wal")


class WalCorruptError(InvalidInput):
    code = "wal_corrupt"


class WalRecordTooLarge(InvalidInput):
    code = "wal_record_too_large"


def _frame(payload: bytes) -> bytes:
    length = struct.pack(">I", len(payload))
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(length + payload)) + payload


def _frame_at(data: bytes, position: int, record_bytes_max: int) -> tuple[bytes, int] | None:
    """The payload of a valid frame at `position` and the position after it, else None."""
    if len(data) - position < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack_from(data, position)
    end = position + HEADER.size + length
    if magic != MAGIC or length > record_bytes_max or end > len(data):
        return None
    payload = data[position + HEADER.size : end]
    if zlib.crc32(struct.pack(">I", length) + payload) != crc:
        return None
    return payload, end


def _valid_frame_after(data: bytes, position: int, record_bytes_max: int) -> bool:
    start = position + 1
    while (found := data.find(MAGIC, start)) != -1:
        if _frame_at(data, found, record_bytes_max) is not None:
            return True
        start = found + 1
    return False


def read_records(
    path: Path, record_bytes_max: int = RECORD_BYTES_MAX
) -> tuple[list[WalRecord], int, int]:
    """Records of one file, the byte length of its valid prefix, and the file's length.

    Raises WalCorruptError when damage is followed by valid records."""
    data = path.read_bytes()
    records: list[WalRecord] = []
    position = 0
    while position < len(data):
        frame = _frame_at(data, position, record_bytes_max)
        if frame is None:
            if _valid_frame_after(data, position, record_bytes_max):
                raise WalCorruptError(
                    f"{path}: record at byte {position} is damaged and valid records follow it",
                    hint="this is not a torn write; restore the WAL from a backup or, after "
                    "making sure this validator signs nothing at this height, remove the file",
                )
            break
        payload, position = frame
        try:
            records.append(WalRecord.decode(payload, max_bytes=record_bytes_max))
        except CarechainError as exc:
            raise WalCorruptError(
                f"{path}: a record's checksum is right but it is unreadable: {exc}"
            ) from None
    return records, position, len(data)


class ConsensusWal:
    def __init__(self, folder: Path, record_bytes_max: int = RECORD_BYTES_MAX) -> None:
        self.folder = folder
        self.record_bytes_max = record_bytes_max
        self.never_signed = (folder / NEVER_SIGNED).exists()
        folder.mkdir(parents=True, exist_ok=True)
        self._records: list[WalRecord] = []
        self.repairs: list[str] = []
        self._file: BinaryIO | None = None
        self._height = 0
        self._dirty = False
        for height, path in self._files():
            records, valid, size = read_records(path, record_bytes_max)
            if valid < size:
                message = f"{path}: cut a torn tail of {size - valid} bytes after a crash"
                log.warning(message)
                self.repairs.append(message)
                with path.open("r+b") as handle:
                    handle.truncate(valid)
                    os.fsync(handle.fileno())
            self._records.extend(records)
            self._height = height

    def _files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _path(self, height: int) -> Path:
        return self.folder / f"wal-{height:020d}.log"

    def forget_never_signed(self) -> None:
        """The node holds a block now: from here on a lost data folder shows by its absence."""
        if self.never_signed:
            (self.folder / NEVER_SIGNED).unlink(missing_ok=True)
            self.never_signed = False

    def records(self, height: int | None = None) -> list[WalRecord]:
        return [r for r in self._records if height is None or r.height == height]

    def rotate(self, height: int) -> None:
        """Start the file of `height`; drop files of heights below height - 1."""
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._height = height
        for old, path in self._files():
            if old < height - 1:
                path.unlink()
        self._records = [r for r in self._records if r.height >= height - 1]

    def append(self, record: WalRecord) -> None:
        """Append one record (durable after `sync`). A record that cannot be encoded, or is
        larger than this WAL could read back, raises a typed error and writes nothing."""
        encoded = record.encode()
        if len(encoded) > self.record_bytes_max:
            raise WalRecordTooLarge(
                f"a WAL record of {len(encoded)} bytes exceeds this chain's limit of "
                f"{self.record_bytes_max}",
                hint="a proposal or lock larger than genesis allows was built: a bug",
            )
        if self._file is None:
            self._file = self._path(max(self._height, record.height)).open("ab")
        self._file.write(_frame(encoded))
        self._records.append(record)
        self._dirty = True

    def sync(self) -> None:
        """Make every appended record durable (flush and fsync)."""
        if self._file is not None and self._dirty:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._dirty = False

    def close(self) -> None:
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None

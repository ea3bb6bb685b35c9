"""Archive readers: the registry's bulk download, a directory of ``NCT*.json``, NDJSON.

Every reader streams: records are read one at a time (a zip member, a file, a line) and handed
out in batches, so memory stays flat whatever the archive's size. Each record carries a label
(the member name, the file name, ``<file> line <n>``) for error messages.

An archive that can be read from the middle has a ``key`` (the same archive gives the same key on
any host, at any path) and is cut into :class:`Span` s that workers read independently: a zip
with its central directory (each span starts at a member's local header), a directory (its sorted
file names) and an NDJSON file (each span starts at a line). A zip without its central directory
(a truncated download) and standard input can only be read in order, by one worker.

Zips are always read from their local headers with ``stream-unzip``, never through the central
directory, so a truncated zip still yields every member before the cut.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from mirror.errors import MalformedRecord, UsageError
from mirror.record import nct_id_of
from mirror.source.base import ArchiveDamaged, Observation, Record, RecordSource, Span

CHUNK = 1 << 16


def open_archive(path: str, stdin: BinaryIO | None = None) -> RecordSource:
    """The reader of ``path``: a zip, a directory or an NDJSON file; ``-`` is NDJSON on stdin."""
    if path == "-":
        if stdin is None:
            raise UsageError("'-' reads NDJSON from standard input, and there is none")
        return NdjsonArchive("stdin", stream=stdin)
    where = Path(path)
    if where.is_dir():
        return DirectoryArchive(where)
    try:
        with where.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZipArchive(where)
    return NdjsonArchive(where.name, path=where)


def to_observation(record: Record, observed_at: datetime) -> Observation:
    """The record as an observation of its study; :class:`MalformedRecord` when it is not one."""
    try:
        study = orjson.loads(record.data)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(f"not valid JSON ({exc})") from None
    return Observation(nct_id_of(study), record.data, study, observed_at, origin="archive")


def _batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Lists of ``size`` records; damage is raised after the records read before it."""
    batch: list[Record] = []
    damage: ArchiveDamaged | None = None
    try:
        for record in records:
            batch.append(record)
            if len(batch) >= size:
                yield batch
                batch = []
    except ArchiveDamaged as exc:
        damage = exc
    if batch:
        yield batch
    if damage is not None:
        raise damage


def _file_key(kind: str, path: Path) -> str:
    """An archive file's identity: its size and its first and last MiB, not its path or mtime,
    so copies of one download on several hosts are the same archive."""
    digest = hashlib.sha256(kind.encode())
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(size - (1 << 20), 0))
        digest.update(f.read(1 << 20))
    return digest.hexdigest()


# -- zip -----------------------------------------------------------------------------------------


class ZipArchive:
    """A zip of one JSON study per member (``ctg-studies.json.zip``); directories are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        with path.open("rb") as f:
            self.directory = _find_central_directory(f, path.stat().st_size)
        self.total = self.directory[1] if self.directory else None
        self.key = _file_key("zip", path) if self.directory else None

    def spans(self, size: int) -> Iterator[Span]:
        if self.directory is None:
            raise UsageError(f"{self.name} has no central directory: it can only be read in order")
        with self.path.open("rb") as f:
            offsets = _local_header_offsets(f, *self.directory, name=self.name)
        for first in range(0, len(offsets), size):
            yield Span(first, min(size, len(offsets) - first), offsets[first])

    def batches(self, size: int, span: Span | None = None) -> Iterator[list[Record]]:
        if span is None:
            return _batched(self._members(None), size)
        return _batched(self._span(span), size)

    def _span(self, span: Span) -> Iterator[Record]:
        """The members of ``span``, each inflated in one call where its local header gives its
        sizes (what writers that seek do, the registry's download included); from the first
        one that does not, the rest of the span is read as a stream."""
        with self.path.open("rb") as f:
            f.seek(span.offset or 0)
            for index in range(span.first, span.first + span.count):
                at = f.tell()
                try:
                    record = _direct_member(f)
                except _BadMember as exc:
                    end = span.first + span.count
                    damage = _zip_damage(exc.reason, exc.member, index, end)
                    raise ArchiveDamaged(self.name, damage) from None
                if record is None:  # streamed member: stream_unzip reads the rest
                    rest = Span(index, span.first + span.count - index, at)
                    yield from self._members(rest)
                    return
                if record.label:
                    yield record

    def _members(self, span: Span | None) -> Iterator[Record]:
        # Imported here, not at start-up: it brings its decryption library, and most archives
        # are read member by member (_span).
        from stream_unzip import TruncatedDataError, UnzipError, stream_unzip

        first, limit = (span.first, span.count) if span else (0, None)
        with self.path.open("rb") as f:
            f.seek(_start(span))
            members = stream_unzip(_chunks(f))
            seen, current = 0, None
            try:
                while limit is None or seen < limit:
                    member = next(members, None)
                    if member is None:
                        break
                    raw_name, _, chunks = member
                    current = raw_name.decode("utf-8", "replace")
                    data = b"".join(chunks)
                    seen += 1
                    if not raw_name.endswith(b"/"):
                        yield Record(current, data)
                    current = None
            except UnzipError as exc:
                end = None if limit is None else first + limit
                reason = None if isinstance(exc, TruncatedDataError) else type(exc).__name__
                raise ArchiveDamaged(
                    self.name, _zip_damage(reason, current, first + seen, end)
                ) from None
            finally:
                members.close()
        if span is None and self.directory is None:
            raise ArchiveDamaged(
                self.name,
                f"is truncated: its central directory is cut short (all {seen} members read)",
            )


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


class _BadMember(Exception):
    def __init__(self, member: str | None, reason: str) -> None:
        super().__init__(reason)
        self.member, self.reason = member, reason


def _direct_member(f: BinaryIO) -> Record | None:
    """The member at ``f``'s position, read and inflated whole, and ``f`` moved past it; its label
    is empty for a directory. None (``f`` unmoved) when its local header lacks its sizes, it is
    encrypted or not deflated or stored: stream_unzip reads such members. _BadMember when it
    is damaged."""
    start = f.tell()
    head = f.read(_LOCAL_HEADER.size)
    if len(head) < _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
        raise _BadMember(None, "no local header where the central directory says one starts")
    _, _, flags, method, _, _, crc, size, length, name_length, extra_length = _LOCAL_HEADER.unpack(
        head
    )
    if flags & 0x09 or method not in (0, 8) or 0xFFFFFFFF in (size, length):
        f.seek(start)
        return None
    name = f.read(name_length).decode("utf-8", "replace")
    f.seek(extra_length, os.SEEK_CUR)
    data = f.read(size)
    if len(data) < size:
        raise _BadMember(name, "cut short")
    try:
        body = zlib.decompress(data, -15, length) if method == 8 else data
    except zlib.error as exc:
        raise _BadMember(name, f"bad deflate data: {exc}") from None
    if len(body) != length or zlib.crc32(body) != crc:
        raise _BadMember(name, "bad CRC-32")
    return Record("" if name.endswith("/") else name, body)


def _zip_damage(reason: str | None, member: str | None, index: int, end: int | None) -> str:
    """Where a zip could not be read further (``index``: the member, from 0), why (None: it is
    cut short) and what was lost."""
    where = f"member #{index + 1} ({member})" if member else f"the header of member #{index + 1}"
    lost = f"members #{index + 1}-#{end} skipped" if end else f"{index} members before it read"
    if reason is None:
        return f"is truncated (an unfinished download?) at {where}; {lost}"
    return f"is damaged at {where} ({reason}); {lost}"


def _start(span: Span | None) -> int:
    return (span.offset or 0) if span is not None else 0


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_ENTRY = struct.Struct("<4s6H3L5H2L")


def _find_central_directory(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """(offset, entries) of a zip's central directory; None when its end record is missing."""
    tail_size = min(size, _EOCD.size + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if at + _EOCD.size <= len(tail):
            fields = _EOCD.unpack_from(tail, at)
            if at + _EOCD.size + fields[7] == len(tail):
                break
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        return None
    _, _, _, _, entries, length, offset, _ = _EOCD.unpack_from(tail, at)
    eocd_at = size - tail_size + at
    if eocd_at >= _ZIP64_LOCATOR.size:
        f.seek(eocd_at - _ZIP64_LOCATOR.size)
        locator = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
        if locator[0] == b"PK\x06\x07":
            f.seek(locator[2])
            record = _ZIP64_EOCD.unpack(f.read(_ZIP64_EOCD.size))
            if record[0] == b"PK\x06\x06":
                entries, length, offset = record[7], record[8], record[9]
    # "PK\5\6" can occur by chance in compressed data: the directory must also fit before it.
    return (offset, entries) if offset + length <= eocd_at else None


def _local_header_offsets(f: BinaryIO, offset: int, entries: int, *, name: str) -> array[int]:
    """Where each member's local header starts, in file order (8 bytes a member)."""
    offsets = array("q")
    f.seek(offset)
    for index in range(entries):
        head = f.read(_CENTRAL_ENTRY.size)
        if len(head) < _CENTRAL_ENTRY.size or head[:4] != b"PK\x01\x02":
            raise ArchiveDamaged(name, f"has a damaged central directory (entry {index})")
        fields = _CENTRAL_ENTRY.unpack(head)
        compressed, uncompressed = fields[8], fields[9]
        name_len, extra_len, comment_len, local = fields[10], fields[11], fields[12], fields[16]
        f.seek(name_len, os.SEEK_CUR)
        extra = f.read(extra_len)
        f.seek(comment_len, os.SEEK_CUR)
        if local == 0xFFFFFFFF:
            local = _zip64_offset(extra, uncompressed, compressed)
        offsets.append(local)
    return array("q", sorted(offsets))


def _zip64_offset(extra: bytes, uncompressed: int, compressed: int) -> int:
    """The local header offset from a central entry's zip64 extra field (APPNOTE 4.5.3)."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, at)
        if tag == 1:
            skip = 8 * ((uncompressed == 0xFFFFFFFF) + (compressed == 0xFFFFFFFF))
            return int(struct.unpack_from("<Q", extra, at + 4 + skip)[0])
        at += 4 + length
    return 0xFFFFFFFF


# -- directory -----------------------------------------------------------------------------------


class DirectoryArchive:
    """A directory of ``NCT*.json`` files, one study each, read in file-name order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name or str(path)
        digest, total_size, names = hashlib.sha256(b"directory"), 0, []
        with os.scandir(path) as entries:
            for entry in entries:
                if (
                    entry.name.startswith("NCT")
                    and entry.name.endswith(".json")
                    and entry.is_file()
                ):
                    names.append(entry.name)
                    total_size += entry.stat().st_size
        self.names = sorted(names)
        for file_name in self.names:
            digest.update(file_name.encode() + b"\0")
        digest.update(str(total_size).encode())
        self.key: str | None = digest.hexdigest()
        self.total: int | None = len(self.names)

    def spans(self, size: int) -> Iterator[Span]:
        for first in range(0, len(self.names), size):
            yield Span(first, min(size, len(self.names) - first))

    def batches(self, size: int, span: Span | None = None) -> Iterator[list[Record]]:
        first, count = (span.first, span.count) if span else (0, len(self.names))
        return _batched(self._files(self.names[first : first + count]), size)

    def _files(self, names: list[str]) -> Iterator[Record]:
        for file_name in names:
            try:
                data = (self.path / file_name).read_bytes()
            except OSError as exc:
                raise ArchiveDamaged(self.name, f"lost {file_name}: {exc.strerror}") from None
            yield Record(file_name, data)


# -- NDJSON --------------------------------------------------------------------------------------


class NdjsonArchive:
    """One JSON study per line, from a file (which can be split) or a stream (which cannot)."""

    def __init__(
        self, name: str, *, path: Path | None = None, stream: BinaryIO | None = None
    ) -> None:
        self.name = name
        self.path = path
        self.stream = stream
        self.key = _file_key("ndjson", path) if path else None
        self.total: int | None = None  # unknown until the file is read once

    def spans(self, size: int) -> Iterator[Span]:
        if self.path is None:
            raise UsageError(f"{self.name} can only be read in order")
        starts: list[tuple[int, int]] = []
        lines = offset = 0
        with self.path.open("rb") as f:
            for line in f:
                if lines % size == 0:
                    starts.append((lines, offset))
                lines, offset = lines + 1, offset + len(line)
        for first, at in starts:
            yield Span(first, min(size, lines - first), at)

    def batches(self, size: int, span: Span | None = None) -> Iterator[list[Record]]:
        return _batched(self._lines(span), size)

    def _lines(self, span: Span | None) -> Iterator[Record]:
        if self.path is None:
            assert self.stream is not None and span is None
            yield from self._read(self.stream, 0, None)
            return
        with self.path.open("rb") as f:
            f.seek(_start(span))
            yield from self._read(f, span.first if span else 0, span.count if span else None)

    def _read(self, f: BinaryIO, first: int, count: int | None) -> Iterator[Record]:
        number = first
        for line in f:
            number += 1
            if line.strip():
                yield Record(f"{self.name} line {number}", line.rstrip(b"\r\n"))
            if count is not None and number - first >= count:
                return
        if count is not None and number - first < count:
            raise ArchiveDamaged(self.name, f"ends at line {number}, before its last span")

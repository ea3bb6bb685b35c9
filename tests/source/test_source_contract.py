"""The contract every record source keeps, one suite run over each of them.

The sources: the API v2 client read by ids and by a search (against the fake API v2, serving
the records over loopback HTTP), and the archive readers on a zip of ``NCT….json`` members (as
written by a writer that seeks, and as a stream with data descriptors), a directory of
``NCT*.json`` files, an NDJSON file and NDJSON on standard input. Each is adapted to one shape:
given the same real records, which Observations does it hand over, in which batches. The tests
then state what the pipeline relies on whatever the records came from, as apscheduler runs one
data-store suite over every store. A new source gets a ``Kind`` here and passes the same tests.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_ctgov import DATA_DIR, FakeCtgov, all_study_ids

from mirror.config import SourceSettings
from mirror.errors import UsageError
from mirror.record import DEFAULT_IGNORE, content_hash, encode, normalize, utcnow
from mirror.source import (
    ApiSource,
    FetchItem,
    Observation,
    Page,
    RecordSource,
    Span,
    open_archive,
    to_observation,
)

# 30 real records spread over the whole set, oldest ids to newest.
SAMPLE = all_study_ids()[::56][:30]
# Ids a request, studies a search page, records a batch or a span: 7 does not divide 30, so the
# last of each is short.
SIZE = 7


def real(nct_id: str) -> bytes:
    """The real record's data file, byte for byte."""
    return (DATA_DIR / "studies" / f"{nct_id}.json").read_bytes()


@dataclass(frozen=True)
class Read:
    """What one read of a source handed over, and when the read ran."""

    batches: list[list[FetchItem]]
    total: int | None  # what the source announced before handing anything over
    started: datetime
    finished: datetime

    @property
    def items(self) -> list[FetchItem]:
        return [item for batch in self.batches for item in batch]

    @property
    def observations(self) -> list[Observation]:
        return [item for item in self.items if isinstance(item, Observation)]


class Kind:
    """One source holding (or serving) the records of ``SAMPLE``, adapted to the contract."""

    name: str
    origin: str  # what its observations' ``origin`` must say
    counts_ahead: bool  # it announces how many records it holds before reading them
    unsplittable: str | None  # why it cannot be read span by span; None: it can

    def read(self) -> Read:
        """Everything the source hands over, in the batches it hands it over in."""
        raise NotImplementedError

    @cached_property
    def first(self) -> Read:
        """The first read, shared by the tests that only look at what it handed over."""
        return self.read()


class Api(Kind):
    """``ApiSource`` against the fake API v2: ``by_ids(SAMPLE)`` or a search matching them all."""

    origin = "api"
    counts_ahead = True
    unsplittable = "the API is read by id or by search, not in spans"

    def __init__(self, name: str, fake: FakeCtgov) -> None:
        self.name = name
        self.settings = SourceSettings(
            base_url=fake.base_url,
            history_base_url=fake.history_base_url,
            requests_per_minute=100000,
            concurrency=4,
            timeout_seconds=5,
            retry_base_seconds=0.01,
            retry_max_seconds=0.05,
            ids_per_request=SIZE,
            page_size=SIZE,
        )

    def _pages(self, source: ApiSource) -> AsyncIterator[Page]:
        if self.name == "api-ids":
            return source.by_ids(SAMPLE)
        return source.search({})  # no filter: every study the registry holds, i.e. SAMPLE

    def read(self) -> Read:
        async def go() -> list[Page]:
            async with ApiSource(self.settings) as source:
                return [page async for page in self._pages(source)]

        started = utcnow()
        pages = asyncio.run(go())
        finished = utcnow()
        total = pages[0].total if pages else None
        return Read([page.items for page in pages], total, started, finished)


class Archive(Kind):
    """``open_archive`` on a file or directory, read the way ``ctmirror import`` reads it."""

    origin = "archive"

    def __init__(
        self, name: str, path: Path, *, counts_ahead: bool = True, unsplittable: str | None = None
    ) -> None:
        self.name = name
        self.path = path
        self.counts_ahead = counts_ahead
        self.unsplittable = unsplittable

    def open(self) -> RecordSource:
        if self.name == "ndjson-stdin":
            return open_archive("-", stdin=io.BytesIO(self.path.read_bytes()))
        return open_archive(str(self.path))

    def read(self) -> Read:
        """In batches, every record stamped with the time of the run (as the importer does)."""
        started = utcnow()
        source = self.open()
        total = source.total
        batches: list[list[FetchItem]] = [
            [to_observation(record, started) for record in batch] for batch in source.batches(SIZE)
        ]
        return Read(batches, total, started, utcnow())

    def by_span(self, size: int) -> list[tuple[Span, list[Observation]]]:
        """Each span read on its own by a reader of its own, as import workers read them."""
        when = utcnow()
        return [
            (
                span,
                [to_observation(r, when) for batch in self.open().batches(3, span) for r in batch],
            )
            for span in list(self.open().spans(size))
        ]


class Unseekable(io.RawIOBase):
    """A write-only stream: ``zipfile`` writes to it as to a pipe, with data descriptors."""

    def __init__(self, target: io.BufferedWriter) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self.target.write(data)


def write_zip(path: Path, members: dict[str, bytes], *, seekable: bool = True) -> Path:
    with path.open("wb") as f:
        target = f if seekable else Unseekable(f)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return path


def write_archives(where: Path) -> dict[str, Path]:
    """The records of ``SAMPLE`` in each archive format, as tests/pipeline/test_import.py makes
    them: the data files' bytes, untouched."""
    members = {f"{nct_id}.json": real(nct_id) for nct_id in SAMPLE}
    directory = where / "studies"
    directory.mkdir()
    for name, data in members.items():
        (directory / name).write_bytes(data)
    ndjson = where / "studies.ndjson"
    ndjson.write_bytes(b"".join(data + b"\n" for data in members.values()))
    return {
        "zip": write_zip(where / "ctg-studies.json.zip", members),
        "zip-streamed": write_zip(where / "streamed.zip", members, seekable=False),
        "directory": directory,
        "ndjson": ndjson,
    }


KINDS = ["api-ids", "api-search", "zip", "zip-streamed", "directory", "ndjson", "ndjson-stdin"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCtgov]:
    """The fake API v2 serving exactly the records of ``SAMPLE``."""
    with FakeCtgov(ids=SAMPLE) as api:
        yield api


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_archives(tmp_path_factory.mktemp("archives"))


@pytest.fixture(scope="module", params=KINDS)
def source(request: pytest.FixtureRequest) -> Kind:
    """Each kind of source, holding (or serving) the records of ``SAMPLE``."""
    name: str = request.param
    if name.startswith("api"):
        return Api(name, request.getfixturevalue("fake"))
    paths: dict[str, Path] = request.getfixturevalue("archives")
    if name == "ndjson":  # lines are only counted by reading them
        return Archive(name, paths["ndjson"], counts_ahead=False)
    if name == "ndjson-stdin":
        return Archive(
            name,
            paths["ndjson"],
            counts_ahead=False,
            unsplittable="NDJSON on standard input can only be read in order",
        )
    return Archive(name, paths[name])


@pytest.fixture(scope="module")
def stored() -> dict[str, tuple[dict[str, Any], bytes, str]]:
    """What the mirror stores of each real record read from its data file: the canonical record,
    its encoding and its content hash."""
    out = {}
    for nct_id in SAMPLE:
        record = normalize(orjson.loads(real(nct_id)), DEFAULT_IGNORE)
        encoded, parts = encode(record)
        out[nct_id] = (record, encoded, content_hash(parts))
    return out


def said(obs: Observation) -> tuple[Any, ...]:
    """Everything an observation says but when it was made."""
    return (obs.nct_id, obs.raw, obs.origin, obs.source_date, obs.registry_version)


# -- the contract --------------------------------------------------------------------------------


def test_every_record_arrives_as_exactly_one_observation(source: Kind) -> None:
    """Each record is handed over once, as an Observation of its own NCT id, and nothing else."""
    items = source.first.items
    assert [type(item) for item in items] == [Observation] * len(SAMPLE)
    assert Counter(obs.nct_id for obs in source.first.observations) == Counter(SAMPLE)
    for obs in source.first.observations:
        assert obs.study["protocolSection"]["identificationModule"]["nctId"] == obs.nct_id


def test_raw_parses_to_the_study_and_to_the_real_record(source: Kind) -> None:
    """``raw`` is bytes of JSON that parse to exactly ``study``: the real record's content."""
    for obs in source.first.observations:
        assert isinstance(obs.raw, bytes)
        assert orjson.loads(obs.raw) == obs.study
        assert obs.study == orjson.loads(real(obs.nct_id))


def test_observed_at_is_utc_and_taken_during_the_read(source: Kind) -> None:
    """``observed_at`` is timezone-aware UTC, a time while the source was being read."""
    read = source.first
    for obs in read.observations:
        assert obs.observed_at.utcoffset() == timedelta(0)
        assert read.started <= obs.observed_at <= read.finished


def test_origin_says_where_the_record_came_from(source: Kind) -> None:
    """``origin`` is ``api`` for the registry's API and ``archive`` for an archive."""
    assert {obs.origin for obs in source.first.observations} == {source.origin}


def test_a_current_record_leaves_version_and_date_to_the_record(source: Kind) -> None:
    """Only history backfill sets ``registry_version`` and ``source_date``; a read of the
    current record leaves them None (the date is then the record's LastUpdatePostDate)."""
    for obs in source.first.observations:
        assert (obs.registry_version, obs.source_date) == (None, None)


def test_batches_hold_one_to_the_size_asked_for(source: Kind) -> None:
    """Records come in batches (pages, chunks) of at least one and at most the size asked for."""
    sizes = [len(batch) for batch in source.first.batches]
    assert all(1 <= size <= SIZE for size in sizes), sizes
    assert sum(sizes) == len(SAMPLE)


def test_an_announced_total_is_the_number_of_records(source: Kind) -> None:
    """A source that counts its records before reading them announces how many it hands over."""
    assert source.first.total == (len(SAMPLE) if source.counts_ahead else None)


def test_a_source_read_twice_hands_over_the_same_observations(source: Kind) -> None:
    """Reading a source again hands over the same observations, all but the time they were made."""
    first = source.first
    again = source.read()
    assert again.started >= first.finished
    assert sorted(map(said, again.observations)) == sorted(map(said, first.observations))


def test_spans_cover_every_record_exactly_once(source: Kind) -> None:
    """An archive read span by span, each span by a reader of its own, yields every record once,
    as the whole read does."""
    if source.unsplittable:
        pytest.skip(source.unsplittable)
    assert isinstance(source, Archive)
    spans = source.by_span(SIZE)
    starts = range(0, len(SAMPLE), SIZE)
    assert [(s.first, s.count) for s, _ in spans] == [
        (i, min(SIZE, len(SAMPLE) - i)) for i in starts
    ]
    assert [len(observations) for _, observations in spans] == [s.count for s, _ in spans]
    read = [obs for _, observations in spans for obs in observations]
    assert Counter(obs.nct_id for obs in read) == Counter(SAMPLE)
    assert sorted(map(said, read)) == sorted(map(said, source.first.observations))


def test_a_splittable_archive_is_known_by_its_content(source: Kind, tmp_path: Path) -> None:
    """A splittable archive has a key, the same for a copy elsewhere (workers on other hosts); an
    archive read in order only has none, and refuses to be cut into spans."""
    if not isinstance(source, Archive):
        pytest.skip("only archives are read in spans")
    opened = source.open()
    if source.unsplittable:
        assert opened.key is None
        with pytest.raises(UsageError):
            list(opened.spans(SIZE))
        return
    assert opened.key is not None
    copy = tmp_path / source.path.name
    if source.path.is_dir():
        shutil.copytree(source.path, copy)
    else:
        shutil.copyfile(source.path, copy)
    assert open_archive(str(copy)).key == opened.key


def test_the_mirror_stores_the_same_content_whatever_the_source(
    source: Kind, stored: dict[str, tuple[dict[str, Any], bytes, str]]
) -> None:
    """Each observation normalizes to the canonical record, encoding and content hash of the real
    record's data file, so every source stores the same content for the same record."""
    for obs in source.first.observations:
        record = normalize(obs.study, DEFAULT_IGNORE)
        encoded, parts = encode(record)
        assert (record, encoded, content_hash(parts)) == stored[obs.nct_id]

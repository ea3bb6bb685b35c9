"""Small helpers shared by the end-to-end tests: run a sync, read back what it stored, wait for a
server on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from fake_ctgov import FakeCtgov
from sqlalchemy import func, select

from mirror.app import App
from mirror.pipeline import RunSummary, SyncRequest
from mirror.record import ChangeKind
from mirror.store import ChangeEvent, Database, EventBlock, Study, StudyVersion, SyncRun

# A real RECRUITING record with five sites, two primary and four secondary outcomes.
STUDY = "NCT05756322"
# The date every sponsor-style edit of these tests is posted with.
POSTED = "2026-06-01"
SUBMITTED = "2026-05-29"

Change = tuple[str, str, Any, Any]  # field, kind, old, new


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait until the ``ctmirror serve`` at ``base`` answers /healthz; fail if it exits or is
    still silent after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"ctmirror serve did not answer /healthz within {seconds}s")


def serve_command(port: int) -> list[str]:
    """``ctmirror serve`` on ``port`` of loopback, as a command line."""
    return [sys.executable, "-m", "mirror", "serve", "--host", "127.0.0.1", "--port", str(port)]


def start_serve(
    env: dict[str, str], port: int, *, stdout: int = subprocess.DEVNULL
) -> tuple[subprocess.Popen[bytes], str]:
    """``ctmirror serve`` on ``port`` as a real process, once it answers /healthz, and its base
    URL (its stderr is a pipe). Killed if it never answers."""
    process = subprocess.Popen(
        serve_command(port), env={**os.environ, **env}, stdout=stdout, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, seconds=30)
    except BaseException:
        process.kill()
        process.communicate(timeout=30)
        raise
    return process, base


def sync(app: App, request: SyncRequest) -> RunSummary:
    """Run one sync through ``Syncer`` against the app's source, as the CLI does."""

    async def go() -> RunSummary:
        async with app.source() as source:
            return await app.syncer(source).run(request)

    return asyncio.run(go())


def sync_ids(app: App, *nct_ids: str) -> RunSummary:
    return sync(app, SyncRequest(nct_ids=list(nct_ids)))


def sponsor_update(
    fake: FakeCtgov,
    nct_id: str,
    edit: Callable[[dict[str, Any]], None],
    posted: str = POSTED,
    submitted: str = SUBMITTED,
) -> dict[str, Any]:
    """Edit a record the way a sponsor's update reaches the registry: content plus new dates."""

    def apply(study: dict[str, Any]) -> None:
        edit(study)
        status = study["protocolSection"]["statusModule"]
        status["lastUpdateSubmitDate"] = submitted
        status["lastUpdatePostDateStruct"] = {"date": posted, "type": "ACTUAL"}

    return fake.edit(nct_id, apply)


def date_changes(
    old_study: dict[str, Any], posted: str = POSTED, submitted: str = SUBMITTED
) -> list[Change]:
    """The two events every sponsor_update() adds: the new submit and post dates."""
    status = old_study["protocolSection"]["statusModule"]
    return [
        (
            "status.lastUpdatePostDate",
            "changed",
            status["lastUpdatePostDateStruct"]["date"],
            posted,
        ),
        ("status.lastUpdateSubmitDate", "changed", status["lastUpdateSubmitDate"], submitted),
    ]


def module(study: dict[str, Any], name: str) -> Any:
    return study["protocolSection"][name]


def site_field(location: dict[str, Any]) -> str:
    """The field path of one site, built here from docs/fields.md's rule, not from mirror's code."""
    parts = [str(location.get(k) or "") for k in ("facility", "city", "state", "country")]
    return "locations." + "|".join(" ".join(p.split()).lower() for p in parts)


def all_events(db: Database) -> list[ChangeEvent]:
    """Every change event in id order: the stored rows, and the first-sight blocks expanded
    here (one ``added``, ``initial`` event per listed field, ids from ``first_id`` on, values
    from the version's canonical record), independently of mirror's own reader."""
    with db.session() as session:
        found = list(session.scalars(select(ChangeEvent)))
        blocks = session.execute(
            select(EventBlock, StudyVersion.canonical).join(
                StudyVersion,
                (StudyVersion.study_id == EventBlock.study_id)
                & (StudyVersion.version == EventBlock.version),
            )
        )
        for block, canonical in blocks:
            record = orjson.loads(zstandard.ZstdDecompressor().decompress(canonical))
            names = orjson.loads(block.fields)
            assert block.last_id - block.first_id + 1 == len(names)
            found += [
                ChangeEvent(
                    id=block.first_id + n,
                    study_id=block.study_id,
                    nct_id=block.nct_id,
                    version=block.version,
                    field=name,
                    kind=ChangeKind.ADDED,
                    old=None,
                    new=record.get(name),
                    observed_at=block.observed_at,
                    source_date=block.source_date,
                    initial=True,
                )  # fmt: skip
                for n, name in enumerate(names)
            ]
    return sorted(found, key=lambda e: e.id)


def events(db: Database, nct_id: str, version: int | None = None) -> list[ChangeEvent]:
    """A study's change events in id order (of one version when given)."""
    return [
        e
        for e in all_events(db)
        if e.nct_id == nct_id and (version is None or e.version == version)
    ]


def event_total(db: Database) -> int:
    """How many change events the mirror holds (rows and the events of blocks)."""
    return len(all_events(db))


def changes(db: Database, nct_id: str, version: int) -> list[Change]:
    """(field, kind, old, new) of one version's events, sorted by field."""
    return sorted((e.field, e.kind.value, e.old, e.new) for e in events(db, nct_id, version))


def study_row(db: Database, nct_id: str) -> Study:
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.nct_id == nct_id))
    assert study is not None, f"{nct_id} is not stored"
    return study


def version_numbers(db: Database, nct_id: str) -> list[int]:
    with db.session() as session:
        return list(
            session.scalars(
                select(StudyVersion.version)
                .join(Study, Study.id == StudyVersion.study_id)
                .where(Study.nct_id == nct_id)
                .order_by(StudyVersion.version)
            )
        )


def count(db: Database, model: Any) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def runs(db: Database) -> list[SyncRun]:
    with db.session() as session:
        return list(session.scalars(select(SyncRun).order_by(SyncRun.id)))


def orphans(db: Database) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(versions without any event, events without their version) as (study_id, version)."""
    with db.session() as session:
        versions = set(session.execute(select(StudyVersion.study_id, StudyVersion.version)))
        evented = set(session.execute(select(ChangeEvent.study_id, ChangeEvent.version)))
        evented |= set(session.execute(select(EventBlock.study_id, EventBlock.version)))
    return sorted(versions - evented), sorted(evented - versions)  # type: ignore[arg-type]


def today() -> str:
    """Today's date in UTC, the calendar a watch's high-water mark uses."""
    return datetime.now(UTC).date().isoformat()


def put_real(fake: FakeCtgov, nct_ids: Sequence[str]) -> None:
    from fake_ctgov import load_study

    for nct_id in nct_ids:
        fake.put(load_study(nct_id))

"""Syncs under faults injected in the fake API v2: errors, throttling, truncation, slowness,
an unreachable source, bad input, and a sync killed with SIGKILL half way."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_ctgov import FakeCtgov, all_study_ids, load_study
from helpers import (
    STUDY,
    all_events,
    count,
    event_total,
    module,
    orphans,
    put_real,
    runs,
    study_row,
    version_numbers,
)
from sqlalchemy import func, select

from mirror.app import App
from mirror.record import normalize
from mirror.store import RunStatus, Study, StudyVersion, decompress

ROOT = Path(__file__).resolve().parents[2]
OTHER = "NCT05305430"
THIRD = "NCT00410098"


def stored_raw(app: App, nct_id: str) -> bytes:
    with app.db.session() as session:
        blob = session.scalar(
            select(StudyVersion.raw)
            .join(Study, Study.id == StudyVersion.study_id)
            .where(Study.nct_id == nct_id)
        )
    assert blob is not None
    return decompress(blob)


def log_lines(stderr: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def fields_of(nct_ids: list[str]) -> int:
    return sum(len(normalize(load_study(i), ["derived.*"])) for i in nct_ids)


def events_match_versions(app: App) -> list[tuple[int, int, int, int]]:
    """(study_id, version, events, fields) of every content version whose event count is off."""
    with app.db.session() as session:
        per_version = Counter((e.study_id, e.version) for e in all_events(app.db))
        rows = session.execute(
            select(StudyVersion.study_id, StudyVersion.version, StudyVersion.canonical)
        )
        wrong = []
        for study_id, version, canonical in rows:
            fields = len(orjson.loads(decompress(canonical)))
            if per_version[(study_id, version)] != fields:
                wrong.append((study_id, version, per_version[(study_id, version)], fields))
    return wrong


# -- transient errors -----------------------------------------------------------------------


def test_random_500_and_429_still_store_every_study_once(
    fake_api: FakeCtgov, run: Any, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 20% of requests failing (500/429), a 200-study sync stores each study once."""
    ids = all_study_ids()[:200]
    put_real(fake_api, ids)
    monkeypatch.setenv("CTMIRROR_SOURCE__IDS_PER_REQUEST", "10")
    fake_api.fail_randomly(0.2, seed=3)  # seed 0 happens to pass the first 25 requests
    result = run("sync", *ids)
    assert result.stdout.startswith(
        "sync ok: 200 fetched, 200 new, 0 changed, 0 unchanged, 0 gone, 0 failed in "
    )
    faults = Counter(r.status for r in fake_api.requests if r.fault == "status")
    assert faults[500] > 0 and faults[429] > 0
    # Each of the 20 chunks of 10 ids was answered exactly once in the end.
    assert [r.status for r in fake_api.requests if r.fault is None] == [200] * 20
    assert count(app.db, Study) == 200
    assert count(app.db, StudyVersion) == 200
    with app.db.session() as session:
        assert set(session.scalars(select(StudyVersion.version))) == {1}
        assert set(session.scalars(select(Study.latest_version))) == {1}
    assert event_total(app.db) == fields_of(ids)
    assert events_match_versions(app) == []


@pytest.mark.parametrize("fault", ["truncate_body", "truncate_json"])
def test_truncated_listing_is_retried_and_never_stored(
    fake_api: FakeCtgov, run: Any, app: App, fault: str
) -> None:
    """A cut-off GET /studies answer is retried; what is stored is the whole record."""
    put_real(fake_api, [STUDY])
    fake_api.fault_next(fault, path_contains="filter.ids")
    run("sync", STUDY)
    assert [(r.fault, r.status) for r in fake_api.requests] == [(fault, 200), (None, 200)]
    assert fake_api.requests[0].target == fake_api.requests[1].target
    assert stored_raw(app, STUDY) == fake_api.served_bytes(STUDY)
    assert version_numbers(app.db, STUDY) == [1]
    assert event_total(app.db) == fields_of([STUDY])


@pytest.mark.parametrize("fault", ["truncate_body", "truncate_json"])
def test_truncated_single_study_is_retried_and_stored_as_served(
    fake_api: FakeCtgov, run: Any, app: App, fault: str
) -> None:
    """A cut-off GET /studies/{id} answer is retried; the stored raw JSON is the served bytes."""
    put_real(fake_api, [OTHER])
    fake_api.alias(THIRD, OTHER)
    # The listing does not know the alias, so the 301 of /studies/{alias} leads to the target.
    fake_api.edit(OTHER, lambda s: module(s, "identificationModule").pop("nctIdAliases"))
    fake_api.fault_next(fault, path_contains=f"/studies/{OTHER}")
    run("sync", THIRD)
    single = [(r.fault, r.status) for r in fake_api.requests if r.path.endswith(OTHER)]
    assert single == [(fault, 200), (None, 200)]
    assert stored_raw(app, OTHER) == fake_api.served_bytes(OTHER)
    assert version_numbers(app.db, OTHER) == [1]
    assert study_row(app.db, THIRD).alias_of == OTHER


def test_429_retry_after_is_honoured(fake_api: FakeCtgov, run: Any, app: App) -> None:
    """A 429 is retried after its Retry-After, not after the (much longer) backoff."""
    put_real(fake_api, [STUDY])
    run.env["CTMIRROR_SOURCE__RETRY_BASE_SECONDS"] = "30"
    run.env["CTMIRROR_SOURCE__RETRY_MAX_SECONDS"] = "60"
    fake_api.fault_next("status", status=429, retry_after=0.05, path_contains="filter.ids")
    result = run("sync", STUDY)
    assert [(r.fault, r.status) for r in fake_api.requests] == [("status", 429), (None, 200)]
    assert fake_api.requests[0].target == fake_api.requests[1].target
    retries = [line for line in log_lines(result.stderr) if line["event"] == "source.retry"]
    assert [(r["attempt"], r["wait_s"]) for r in retries] == [(1, 0.05)]
    assert retries[0]["error"].endswith("/studies: HTTP 429")
    assert version_numbers(app.db, STUDY) == [1]


def test_response_slower_than_the_timeout_is_retried(
    fake_api: FakeCtgov, run: Any, app: App
) -> None:
    """A request that outlives the client timeout is abandoned and asked again."""
    put_real(fake_api, [STUDY])
    run.env["CTMIRROR_SOURCE__TIMEOUT_SECONDS"] = "0.3"
    fake_api.fault_next("slow", seconds=1.5, path_contains="filter.ids")
    result = run("sync", STUDY)
    retries = [line for line in log_lines(result.stderr) if line["event"] == "source.retry"]
    assert [r["error"].endswith("no complete answer within 0.3s") for r in retries] == [True]
    deadline = time.monotonic() + 10
    while len(fake_api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the slow answer is logged by the fake when it finally goes out
    assert sorted((r.fault or "", r.status) for r in fake_api.requests) == [
        ("", 200),
        ("slow", 200),
    ]
    assert fake_api.requests[0].target == fake_api.requests[1].target
    assert version_numbers(app.db, STUDY) == [1]


def test_a_body_trickling_in_is_cut_at_the_deadline_and_asked_again(
    fake_api: FakeCtgov, run: Any, app: App
) -> None:
    """Headers at once, the body at 1,000 B/s: the whole request's deadline cuts it; retried."""
    put_real(fake_api, [STUDY])
    run.env["CTMIRROR_SOURCE__TIMEOUT_SECONDS"] = "0.5"
    fake_api.fault_next("trickle", bytes_per_second=1000, path_contains="filter.ids")
    result = run("sync", STUDY)
    retries = [line for line in log_lines(result.stderr) if line["event"] == "source.retry"]
    assert [r["error"] for r in retries] == [
        f"GET {run.env['CTMIRROR_SOURCE__BASE_URL']}/studies: no complete answer within 0.5s"
    ]
    assert [r.fault for r in fake_api.requests] == ["trickle", None]
    assert version_numbers(app.db, STUDY) == [1]


# -- failures that are not transient --------------------------------------------------------


def test_a_host_name_that_does_not_resolve_fails_at_once(run: Any, app: App) -> None:
    """No such host: one clear error naming the setting, no retries, exit 1, nothing stored."""
    run.env["CTMIRROR_SOURCE__BASE_URL"] = "http://no-such-host.invalid/api/v2"
    result = run("sync", STUDY, expect=1)
    assert [line for line in log_lines(result.stderr) if line["event"] == "source.retry"] == []
    assert (
        "error: no study could be read: GET http://no-such-host.invalid/api/v2/studies: "
        "cannot resolve the host name (Name or service not known); check source.base_url"
    ) in result.stderr.splitlines()
    assert count(app.db, Study) == 0


def test_a_certificate_that_does_not_verify_fails_at_once(
    run: Any, app: App, tmp_path: Path
) -> None:
    """A self-signed HTTPS server: refused on the first attempt, not retried."""
    with _self_signed_server(tmp_path) as port:
        base = f"https://127.0.0.1:{port}/api/v2"
        run.env["CTMIRROR_SOURCE__BASE_URL"] = base
        result = run("sync", STUDY, expect=1)
    assert [line for line in log_lines(result.stderr) if line["event"] == "source.retry"] == []
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(
        f"error: no study could be read: GET {base}/studies: the server's certificate was refused"
    )
    assert count(app.db, Study) == 0


@contextlib.contextmanager
def _self_signed_server(folder: Path) -> Iterator[int]:
    """An HTTPS server on loopback whose certificate nobody signed (made by openssl)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_source_fails_clearly_and_writes_nothing(run: Any, app: App) -> None:
    """A source nobody listens on: one clear error, exit 1, no study, a failed run row."""
    port = closed_port()
    base = f"http://127.0.0.1:{port}/api/v2"
    run.env["CTMIRROR_SOURCE__BASE_URL"] = base
    result = run("sync", STUDY, OTHER, expect=1)
    assert result.stdout.startswith(
        "sync failed: 0 fetched, 0 new, 0 changed, 0 unchanged, 0 gone, 2 failed in "
    )
    message = f"error: no study could be read: GET {base}/studies: ConnectError: "
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(message)
    assert errors[0].endswith("(gave up after 6 attempts)")
    assert (count(app.db, Study), count(app.db, StudyVersion), event_total(app.db)) == (
        0,
        0,
        0,
    )
    (only,) = runs(app.db)
    assert only.status is RunStatus.FAILED
    assert (only.error or "").startswith(f"no study could be read: GET {base}/studies")
    assert (only.fetched, only.failed) == (0, 2)


def test_malformed_nct_id_is_a_usage_error_and_writes_nothing(
    fake_api: FakeCtgov, run: Any, app: App
) -> None:
    """`ctmirror sync NCT1234` exits 2 naming the bad id; nothing is fetched or written."""
    put_real(fake_api, [STUDY])
    result = run("sync", STUDY, "NCT1234", expect=2)
    assert result.stdout == ""
    assert (
        "error: 'NCT1234' is not an NCT id (expected 'NCT' followed by 8 digits, e.g. NCT03039062)"
    ) in result.stderr.splitlines()
    assert fake_api.requests == []
    assert (count(app.db, Study), runs(app.db)) == (0, [])


# -- a crash half way -----------------------------------------------------------------------


def test_sigkill_mid_sync_leaves_no_partial_version(
    fake_api: FakeCtgov, env: dict[str, str], run: Any, app: App
) -> None:
    """SIGKILL between batches keeps whole versions only; the next sync stores the rest once."""
    ids = all_study_ids()[:120]
    put_real(fake_api, ids)
    fake_api.fault_next("slow", count=1000, seconds=0.25, path_contains="/studies")
    child_env = {
        **os.environ,
        **env,
        "CTMIRROR_SOURCE__PAGE_SIZE": "10",
        "CTMIRROR_SYNC__BATCH_SIZE": "5",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "mirror", "sync", "--all"],
        env=child_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            if count(app.db, Study) >= 15:  # several batches committed
                break
            time.sleep(0.01)
        assert child.poll() is None, "the sync ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    stored = count(app.db, Study)
    assert 15 <= stored < 120
    with app.db.session() as session:
        firsts = session.scalar(
            select(func.count()).select_from(StudyVersion).where(StudyVersion.version == 1)
        )
    assert firsts == stored == count(app.db, StudyVersion)
    assert orphans(app.db) == ([], [])
    assert events_match_versions(app) == []
    assert [r.status for r in runs(app.db)] == [RunStatus.RUNNING]

    fake_api.clear_faults()
    result = run("sync", "--all")
    assert result.stdout.startswith(
        f"sync ok: 120 fetched, {120 - stored} new, 0 changed, {stored} unchanged, 0 gone, "
        "0 failed in "
    )
    assert count(app.db, StudyVersion) == count(app.db, Study) == 120
    with app.db.session() as session:
        assert set(session.scalars(select(Study.latest_version))) == {1}
    assert event_total(app.db) == fields_of(ids)
    assert orphans(app.db) == ([], [])
    assert [r.status for r in runs(app.db)] == [RunStatus.INTERRUPTED, RunStatus.OK]

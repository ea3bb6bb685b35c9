"""The daemon: watches on their schedules, outages, signals, and several daemons on one database.

Syncs read the fake API v2 over loopback into a real database (SQLite and PostgreSQL); the
daemon runs in-process (``Daemon.run`` in a thread) or as a real ``ctmirror daemon`` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import (
    ROOT,
    RunningDaemon,
    deliveries,
    jobs,
    log_events,
    spawn_daemon,
    terminate,
)
from daemon_helpers import wait_until as wait
from fake_ctgov import FakeCtgov, all_study_ids
from helpers import STUDY, count, orphans, put_real, runs
from receiver import Receiver
from sqlalchemy import select, update

from mirror.app import App
from mirror.daemon.jobs import claim_job, enqueue, finish_part, requeue_expired
from mirror.daemon.lock import scheduler_lock
from mirror.daemon.scheduler import Timing, default_timing, is_due
from mirror.notify import EgressPolicy, SubscriptionSpec, add_subscription
from mirror.pipeline import add_watch
from mirror.store import (
    DeliveryStatus,
    JobStatus,
    OutboxEntry,
    RunStatus,
    Study,
    StudyVersion,
    Watch,
)

OTHER, THIRD = "NCT05305430", "NCT00410098"


pytestmark = pytest.mark.usefixtures("fast_daemon")


@pytest.fixture
def fake(fake_api: FakeCtgov) -> FakeCtgov:
    put_real(fake_api, [STUDY, OTHER, THIRD])
    return fake_api


def watch_row(app: App, name: str) -> Watch:
    with app.db.session() as session:
        found = session.scalar(select(Watch).where(Watch.name == name))
    assert found is not None
    return found


def search_requests(fake: FakeCtgov) -> list[str]:
    """filter.advanced of every GET /studies search (not id lookups) the fake answered."""
    return [
        r.query.get("filter.advanced", [""])[0]
        for r in fake.requests
        if r.path.endswith("/studies") and "filter.ids" not in r.query
    ]


# -- --once and schedules ---------------------------------------------------------------------


def test_once_runs_each_due_watch_once_and_exits(fake: FakeCtgov, app: App, run: Any) -> None:
    """`daemon --once` syncs every due watch once; run again at once it finds nothing due."""
    run("watch", "add", "ids", STUDY, OTHER)
    run("watch", "add", "search", "--query", "query.cond=cancer")
    first = run("daemon", "--once")
    assert first.stdout == (
        "daemon --once: 2 watch runs queued, 2 run, 0 failed; 0 webhook attempts\n"
    )
    assert [(r.status, r.selection) for r in runs(app.db)] == [
        (RunStatus.OK, "watch ids"),
        (RunStatus.OK, "watch search"),
    ]
    assert [(j.status, j.full) for j in jobs(app.db)] == [(JobStatus.DONE, True)] * 2
    again = run("daemon", "--once")
    assert again.stdout.startswith("daemon --once: 0 watch runs queued, 0 run, 0 failed")
    assert len(runs(app.db)) == 2


def test_search_watch_is_incremental_then_full_once_the_last_full_is_old(
    fake: FakeCtgov, app: App, run: Any
) -> None:
    """Runs after a full one read by LastUpdatePostDate; a week later the run is full again."""
    run.env["CTMIRROR_DAEMON__AUDIT_AFTER_FULL_RUN"] = "false"  # only the runs' searches here
    run("watch", "add", "search", "--query", "query.cond=cancer", "--schedule", "every 1s")
    run("daemon", "--once")
    time.sleep(1.05)
    run("daemon", "--once")
    today = datetime.now(UTC).date()
    since = (today - timedelta(days=1)).isoformat()
    assert search_requests(fake) == ["", f"AREA[LastUpdatePostDate]RANGE[{since},MAX]"]
    with app.db.write() as session:
        old = datetime.now(UTC) - timedelta(days=8)
        session.execute(update(Watch).values(last_full_run_at=old))
    time.sleep(1.05)
    run("daemon", "--once")
    assert search_requests(fake)[-1] == ""
    assert [j.full for j in jobs(app.db)] == [True, False, True]
    assert watch_row(app, "search").last_full_run_at.date() == today  # type: ignore[union-attr]


def test_default_schedule_is_daily_after_the_registry_refresh() -> None:
    """No schedule: daily, refresh_delay_minutes after the time of /version's dataTimestamp."""
    assert default_timing("2026-11-21T09:00:00", 30) == Timing(crontab="30 9 * * *")
    assert default_timing("2026-11-21T23:50:12", 30) == Timing(crontab="20 0 * * *")
    assert default_timing(None, 30) == Timing(interval=timedelta(days=1))
    daily = Timing(crontab="30 9 * * *")
    watch = Watch(last_run_at=datetime(2026, 11, 21, 9, 40, tzinfo=UTC))
    assert is_due(watch, daily, None, datetime(2026, 11, 22, 9, 29, tzinfo=UTC)) is False
    assert is_due(watch, daily, None, datetime(2026, 11, 22, 9, 31, tzinfo=UTC)) is True
    assert is_due(Watch(last_run_at=None), daily, None, datetime(2026, 1, 1, tzinfo=UTC)) is True


def test_crontab_weekdays_count_from_sunday_and_jitter_is_applied() -> None:
    """'0 9 * * 1' fires on Monday (crontab numbering, not APScheduler 3's); jitter is set."""
    monday = Timing(crontab="0 9 * * 1")
    sunday = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert sunday.strftime("%A") == "Sunday"
    assert monday.next_after(sunday) == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert monday.trigger(300, None).jitter == 300  # type: ignore[attr-defined]
    assert Timing(interval=timedelta(hours=12)).trigger(60, sunday).jitter == 60  # type: ignore[attr-defined]


def test_failed_attempt_waits_for_the_next_tick(fake: FakeCtgov, app: App) -> None:
    """A run that failed counts as an attempt: the watch is not due again before its next time."""
    hourly = Timing(interval=timedelta(hours=1))
    watch = Watch(last_run_at=datetime(2026, 11, 22, 8, tzinfo=UTC))
    failed_at = datetime(2026, 11, 22, 9, 1, tzinfo=UTC)
    assert is_due(watch, hourly, failed_at, datetime(2026, 11, 22, 9, 30, tzinfo=UTC)) is False
    assert is_due(watch, hourly, failed_at, datetime(2026, 11, 22, 10, 2, tzinfo=UTC)) is True


# -- the running daemon -------------------------------------------------------------------------


def test_daemon_delivers_a_change_through_its_own_schedule(
    fake: FakeCtgov, app: App, run: Any
) -> None:
    """A running daemon syncs a watch every second and the change reaches the receiver."""
    with Receiver() as receiver:
        add_watch(app.db, "mine", nct_ids=[STUDY], schedule="every 1s")
        sub, secret = add_subscription(app.db, SubscriptionSpec(receiver.url), _policy())
        with RunningDaemon(app):
            assert wait(lambda: RunStatus.OK in [r.status for r in runs(app.db)])
            fake.edit(STUDY, lambda s: s["protocolSection"]["statusModule"].update(
                overallStatus="COMPLETED"))  # fmt: skip
            (got,) = receiver.wait_for(1)
        body = got.verify(secret)
    assert (body["nct_id"], body["version"], body["type"]) == (STUDY, 2, "study.changed")
    assert [(c["field"], c["new"]) for c in body["changes"]] == [
        ("status.overallStatus", "COMPLETED")
    ]
    assert fake.request_count("/version") >= 1  # the default timing asked the registry


def test_source_outage_is_logged_and_retried_on_the_next_tick(fake: FakeCtgov, app: App) -> None:
    """With the source answering 500, runs fail but the daemon keeps going and recovers."""
    add_watch(app.db, "mine", nct_ids=[STUDY, OTHER], schedule="every 1s")
    fake.fail_randomly(1.0, statuses=(500,))
    with RunningDaemon(app):
        assert wait(lambda: any(j.status is JobStatus.FAILED for j in jobs(app.db)))
        fake.clear_faults()
        assert wait(lambda: any(j.status is JobStatus.DONE for j in jobs(app.db)))
    statuses = [r.status for r in runs(app.db)]
    assert statuses[0] is RunStatus.FAILED and statuses[-1] is RunStatus.OK
    assert count(app.db, Study) == 2
    assert [j.status for j in jobs(app.db)][0] is JobStatus.FAILED


def test_once_exits_1_when_a_run_fails(fake: FakeCtgov, app: App, run: Any) -> None:
    """`daemon --once` with the source down: the run fails, the exit code says so (cron)."""
    add_watch(app.db, "mine", nct_ids=[STUDY])
    fake.fail_randomly(1.0, statuses=(503,))
    result = run("daemon", "--once", expect=1)
    assert result.stdout.startswith("daemon --once: 1 watch runs queued, 1 run, 1 failed")
    assert [(j.status, r.status) for j, r in zip(jobs(app.db), runs(app.db), strict=True)] == [
        (JobStatus.FAILED, RunStatus.FAILED)
    ]


def test_watch_added_while_running_is_picked_up(fake: FakeCtgov, app: App) -> None:
    """The scheduler re-reads the watches: one added at run time is synced without a restart."""
    with RunningDaemon(app):
        time.sleep(0.3)
        assert runs(app.db) == []
        add_watch(app.db, "late", nct_ids=[THIRD])
        assert wait(lambda: [r.status for r in runs(app.db)] == [RunStatus.OK])
    assert [r.selection for r in runs(app.db)] == ["watch late"]


def test_stop_request_returns_within_seconds(fake: FakeCtgov, app: App) -> None:
    """An idle daemon stops well within the 10 s budget."""
    with RunningDaemon(app) as running:
        time.sleep(0.3)
        seconds = running.stop()
    assert seconds < 5


# -- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_sync_exits_0_and_leaves_whole_versions(
    fake_api: FakeCtgov, env: dict[str, str], app: App, run: Any, tmp_path: Path, signum: int
) -> None:
    """SIGTERM/SIGINT mid-sync: exit 0 in 10 s, whole versions with outbox rows, job requeued."""
    ids = all_study_ids()[:120]
    put_real(fake_api, ids)
    run("watch", "add", "everything", "--all")
    fake_api.fault_next("slow", count=1000, seconds=0.25, path_contains="/studies")
    child_env = {**env, "CTMIRROR_SOURCE__PAGE_SIZE": "10", "CTMIRROR_SYNC__BATCH_SIZE": "5"}
    child = spawn_daemon(child_env, log=tmp_path / "daemon.log")
    try:
        assert wait(lambda: count(app.db, Study) >= 15, timeout=60), "no batch was committed"
        signalled = time.monotonic()
        child.send_signal(signum)
        code = child.wait(timeout=10)
        seconds = time.monotonic() - signalled
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert (code, seconds < 10) == (0, True), seconds
    stored = count(app.db, Study)
    assert 15 <= stored < 120
    assert orphans(app.db) == ([], [])
    with app.db.session() as session:
        versions = sorted(session.execute(select(StudyVersion.study_id, StudyVersion.version)))
        outbox = sorted(session.execute(select(OutboxEntry.study_id, OutboxEntry.version)))
    assert outbox == versions and len(versions) == stored
    assert [r.status for r in runs(app.db)] == [RunStatus.INTERRUPTED]
    assert [j.status for j in jobs(app.db)] == [JobStatus.QUEUED]
    events = [e["event"] for e in log_events(tmp_path / "daemon.log")]
    assert "daemon.job_interrupted" in events and events[-1] == "daemon.stopped"

    fake_api.clear_faults()
    finished = run("daemon", "--once")
    assert finished.stdout.startswith("daemon --once: 0 watch runs queued, 1 run, 0 failed")
    assert count(app.db, Study) == count(app.db, StudyVersion) == count(app.db, OutboxEntry) == 120


# -- several daemons ----------------------------------------------------------------------------


def test_second_daemon_does_not_duplicate_work(
    fake: FakeCtgov, env: dict[str, str], app: App, tmp_path: Path
) -> None:
    """Two daemons on one database: one schedules, each watch runs once, each delivery once."""
    with Receiver() as receiver:
        for name, nct_id in [("a", STUDY), ("b", OTHER), ("c", THIRD)]:
            add_watch(app.db, name, nct_ids=[nct_id], schedule="every 1h")
        spec = SubscriptionSpec(receiver.url, include_initial=True, fields=["status.*"])
        add_subscription(app.db, spec, _policy())
        logs = [tmp_path / "one.log", tmp_path / "two.log"]
        daemons = [spawn_daemon(env, log=path) for path in logs]
        try:
            settled = wait(lambda: _all_delivered(app, 3), timeout=40)
            time.sleep(1)  # time enough for a duplicate, were there one
        finally:
            codes = terminate(daemons)
        ids = receiver.delivered_ids()
    assert settled and codes == [0, 0]
    roles = sorted(e["role"] for p in logs for e in log_events(p) if e["event"] == "daemon.role")
    assert roles == ["scheduler", "standby"]
    assert sorted(r.selection for r in runs(app.db)) == ["watch a", "watch b", "watch c"]
    assert [j.status for j in jobs(app.db)] == [JobStatus.DONE] * 3
    assert sorted(ids.values()) == [1, 1, 1]
    assert set(ids) == {d.message_id for d in deliveries(app.db)}


def test_two_once_daemons_at_the_same_time_share_the_work(
    fake: FakeCtgov, env: dict[str, str], app: App
) -> None:
    """Two `daemon --once` started together run each due watch and send each delivery once."""
    with Receiver() as receiver:
        for name, nct_id in [("a", STUDY), ("b", OTHER), ("c", THIRD)]:
            add_watch(app.db, name, nct_ids=[nct_id])
        spec = SubscriptionSpec(receiver.url, include_initial=True, fields=["status.*"])
        add_subscription(app.db, spec, _policy())
        daemons = [spawn_daemon(env, "--once") for _ in range(2)]
        outputs = [d.communicate(timeout=60)[0].decode() for d in daemons]
        ids = receiver.delivered_ids()
    assert [d.returncode for d in daemons] == [0, 0]
    queued = sum(int(o.split(": ")[1].split()[0]) for o in outputs)
    assert queued == 3, outputs
    assert sorted(r.selection for r in runs(app.db)) == ["watch a", "watch b", "watch c"]
    assert sorted(ids.values()) == [1, 1, 1]
    assert [d.status for d in deliveries(app.db)] == [DeliveryStatus.DELIVERED] * 3


def test_scheduler_lock_is_exclusive_and_freed_when_its_holder_dies(
    app: App, env: dict[str, str]
) -> None:
    """While another process holds the lock it cannot be taken; after SIGKILL it can."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK], env={**os.environ, **env}, cwd=ROOT,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        mine = scheduler_lock(app.db)
        assert mine.acquire() is False
        holder.kill()
        holder.wait()
        assert wait(mine.acquire, timeout=10) is True
        assert mine.held() is True
        mine.release()
    finally:
        if holder.poll() is None:
            holder.kill()


HOLD_LOCK = """
import time
from mirror.app import build_app
from mirror.config import load_settings
from mirror.daemon.lock import scheduler_lock
lock = scheduler_lock(build_app(load_settings()).db)
assert lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def _policy() -> EgressPolicy:
    return EgressPolicy()


def _all_delivered(app: App, n: int) -> bool:
    rows = deliveries(app.db)
    return len(rows) == n and all(d.status is DeliveryStatus.DELIVERED for d in rows)


# -- runs in parts ------------------------------------------------------------------------------


def _force_full_run(app: App) -> None:
    """Make the next run of every watch a full one (as a week after its last full one)."""
    with app.db.write() as session:
        old = datetime.now(UTC) - timedelta(days=8)
        session.execute(update(Watch).values(last_full_run_at=old))


def test_full_run_of_a_big_ids_watch_runs_in_parts(fake_api: FakeCtgov, app: App, run: Any) -> None:
    """An ids watch of more than daemon.part_size ids is queued as parts of its ids, each a
    run of its own; the run is recorded as done once every part is."""
    ids = all_study_ids()[:12]
    put_real(fake_api, ids)
    run("watch", "add", "big", *ids)
    run.env["CTMIRROR_DAEMON__PART_SIZE"] = "5"
    result = run("daemon", "--once")
    assert result.stdout.startswith("daemon --once: 1 watch runs queued, 3 run, 0 failed")
    parts = jobs(app.db)
    assert [(j.status, j.parts, j.group_id) for j in parts] == [
        (JobStatus.DONE, 3, parts[0].id)
    ] * 3
    assert [p.part["ids"] for p in parts if p.part] == [ids[:5], ids[5:10], ids[10:]]
    assert sorted(r.selection for r in runs(app.db)) == [
        "watch big part 1/3", "watch big part 2/3", "watch big part 3/3",
    ]  # fmt: skip
    assert count(app.db, StudyVersion) == 12
    assert watch_row(app, "big").last_full_run_at is not None


def test_full_run_of_a_big_search_runs_in_update_date_ranges(
    fake_api: FakeCtgov, app: App, run: Any
) -> None:
    """A search watch with more members than daemon.part_size is read in LastUpdatePostDate
    ranges that split its members evenly; a member no range returned is re-checked by id."""
    ids = all_study_ids()[:30]
    put_real(fake_api, ids)
    run.env["CTMIRROR_DAEMON__AUDIT_AFTER_FULL_RUN"] = "false"  # only the runs' searches here
    run("watch", "add", "everything", "--all", "--schedule", "every 1s")
    run("daemon", "--once")  # the first run: no members yet, so in one piece
    assert [(j.parts, j.part) for j in jobs(app.db)] == [(1, None)]
    gone = ids[7]
    fake_api.remove(gone)
    _force_full_run(app)
    time.sleep(1.05)
    fake_api.requests.clear()
    run.env["CTMIRROR_DAEMON__PART_SIZE"] = "10"
    run("daemon", "--once")
    ranges = [tuple(j.part["updated"]) for j in jobs(app.db)[1:] if j.part]
    assert len(ranges) == 3 and ranges[0][0] == "MIN" and ranges[-1][1] == "MAX"
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):  # contiguous, whole days
        assert date.fromisoformat(end) + timedelta(days=1) == date.fromisoformat(start)
    assert search_requests(fake_api) == [
        f"AREA[LastUpdatePostDate]RANGE[{low},{high}]" for low, high in ranges
    ]
    unseen = [r for r in runs(app.db) if r.selection == "watch everything unseen members"]
    assert [(r.status, r.gone) for r in unseen] == [(RunStatus.OK, 1)]
    with app.db.session() as session:
        states = dict(session.execute(select(Study.nct_id, Study.state)).all())
    assert states[gone].value == "gone" and len(states) == 30
    assert count(app.db, StudyVersion) == 31  # 30 first sights and one tombstone
    last_full = watch_row(app, "everything").last_full_run_at
    assert last_full is not None and last_full.date() == datetime.now(UTC).date()


def test_two_daemons_share_the_parts_of_one_run(
    fake_api: FakeCtgov, env: dict[str, str], app: App, run: Any
) -> None:
    """Two `daemon --once` processes at once: each part runs exactly once, every study is
    stored once, and the run is completed once."""
    ids = all_study_ids()[:40]
    put_real(fake_api, ids)
    run("watch", "add", "big", *ids)
    part_env = {**env, "CTMIRROR_DAEMON__PART_SIZE": "4"}
    daemons = [spawn_daemon(part_env, "--once") for _ in range(2)]
    outputs = [d.communicate(timeout=90)[0].decode() for d in daemons]
    assert [d.returncode for d in daemons] == [0, 0], outputs
    selections = [r.selection for r in runs(app.db)]
    assert sorted(selections) == sorted(f"watch big part {n}/10" for n in range(1, 11))
    assert [j.status for j in jobs(app.db)] == [JobStatus.DONE] * 10
    assert count(app.db, Study) == count(app.db, StudyVersion) == 40
    assert watch_row(app, "big").last_full_run_at is not None


def test_only_the_last_part_to_finish_completes_a_run_and_only_if_all_succeeded(
    app: App,
) -> None:
    """finish_part gives the run's queue time to exactly one finisher: the last, when no part
    failed; a part whose worker died is queued again once its lease has run out."""
    watch = add_watch(app.db, "big", nct_ids=all_study_ids()[:6])
    first = enqueue(app.db, watch.id, full=True, part_size=2)
    assert first is not None and enqueue(app.db, watch.id, full=True, part_size=2) is None
    lease = timedelta(seconds=60)
    a, b, c = (claim_job(app.db, f"worker-{n}", lease) for n in range(3))
    assert a is not None and b is not None and c is not None
    assert (a.group_id, a.part and a.part.ids) == (first, tuple(all_study_ids()[:2]))
    assert finish_part(app.db, a, "worker-0", ok=True, run_id=None, error=None) is None
    assert finish_part(app.db, b, "worker-1", ok=True, run_id=None, error=None) is None
    queued_at = finish_part(app.db, c, "worker-2", ok=True, run_id=None, error=None)
    assert queued_at is not None and jobs(app.db)[0].queued_at == queued_at

    again = enqueue(app.db, watch.id, full=True, part_size=2)
    d, e = (claim_job(app.db, "w", lease) for _ in range(2))
    dead = claim_job(app.db, "dead", timedelta(seconds=0))
    assert again is not None and d is not None and e is not None and dead is not None
    assert finish_part(app.db, d, "w", ok=False, run_id=None, error="source down") is None
    assert finish_part(app.db, e, "w", ok=True, run_id=None, error=None) is None
    time.sleep(0.01)
    assert requeue_expired(app.db) == 1
    retried = claim_job(app.db, "w", lease)
    assert retried is not None and retried.id == dead.id
    assert finish_part(app.db, retried, "w", ok=True, run_id=None, error=None) is None

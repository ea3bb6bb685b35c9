"""Notifications for people end to end: the fake API as the source, a real SMTP server
(aiosmtpd) and a real HTTP receiver (json://) as the services, Apprise in between.

Every test syncs real records over loopback into a real database (SQLite and PostgreSQL), lets
the notification dispatcher send, and checks what the mailbox or the receiver got and what the
delivery rows say.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from mailbox import Mailbox
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_helpers import (
    RunningDaemon,
    app_with,
    log_events,
    notifications,
    spawn_daemon,
    terminate,
    wait_until,
)
from fake_ctgov import FakeCtgov, all_study_ids
from helpers import STUDY, module, put_real, sponsor_update, study_row, sync_ids
from receiver import Receiver
from sqlalchemy import select, update

from mirror.app import App, build_app
from mirror.config import load_settings
from mirror.notify import (
    AppriseNotifier,
    Links,
    TargetSpec,
    add_target,
    build_due_digests,
    fan_out,
)
from mirror.record import utcnow
from mirror.store import DeliveryStatus, DigestItem, NotificationDelivery, NotificationTarget

OTHER = "NCT05305430"
RETRYING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)

pytestmark = pytest.mark.usefixtures("fast_daemon")


@pytest.fixture
def fake(fake_api: FakeCtgov) -> FakeCtgov:
    put_real(fake_api, [STUDY, OTHER])
    return fake_api


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with Mailbox() as box:
        yield box


def json_url(receiver: Receiver) -> str:
    return f"json://127.0.0.1:{receiver.port}/hook"


def add(app: App, url: str, **spec: Any) -> NotificationTarget:
    """A target made through the library, as the CLI makes it."""
    return add_target(app.db, TargetSpec(url, **spec), app.settings.notifications)


def notify(app: App, clock: Callable[[], datetime] | None = None) -> int:
    """Send with the real notifier until nothing is pending or retrying; attempts made."""

    async def go() -> int:
        dispatcher = app.notification_dispatcher(app.notifier(), "test", clock)
        attempts = 0
        while True:
            attempts += await dispatcher.drain()
            if not any(d.status in RETRYING for d in notifications(app.db)):
                return attempts
            await asyncio.sleep(0.01)

    return asyncio.run(go())


def set_status(fake: FakeCtgov, nct_id: str, status: str) -> None:
    sponsor_update(fake, nct_id, lambda s: module(s, "statusModule").update(overallStatus=status))


def set_enrollment(fake: FakeCtgov, nct_id: str, factor: float) -> None:
    def edit(study: dict[str, Any]) -> None:
        info = module(study, "designModule")["enrollmentInfo"]
        info["count"] = round(info["count"] * factor)

    sponsor_update(fake, nct_id, edit)


def titles(receiver: Receiver) -> list[str]:
    return [r.json()["title"] for r in receiver.delivered()]


# -- what people receive ------------------------------------------------------------------------


def test_email_about_a_watched_trial_reads_well(
    fake: FakeCtgov, app: App, mailbox: Mailbox, run: Any
) -> None:
    """`notify add mailto://… --watch mine`: a status change arrives as a readable email."""
    run("watch", "add", "mine", STUDY, "--schedule", "every 1s")
    added = run("notify", "add", mailbox.url(), "--watch", "mine")
    assert added.stdout.startswith("added notification target 1 (mailto-1) -> mailto://")
    run("daemon", "--once")
    assert mailbox.messages == []  # a study's first sight is not news
    set_status(fake, STUDY, "COMPLETED")
    time.sleep(1.05)
    result = run("daemon", "--once")
    assert result.stdout.endswith("0 webhook attempts, 1 notification attempts\n")
    (mail,) = mailbox.wait_for(1)
    assert mail["Subject"] == f"{STUDY}: status RECRUITING → COMPLETED (+2 more)"
    assert (mail["From"], mail["To"]) == ("ctmirror@example.org", "person@example.org")
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    title = study_row(app.db, STUDY).title
    assert title and title in text
    assert "status.overallStatus — changed: RECRUITING → COMPLETED" in text
    assert "status.lastUpdatePostDate — changed:" in text
    page = f"http://127.0.0.1:8000/trials/{STUDY}.html"
    compare = f"http://127.0.0.1:8000/trials/{STUDY}/compare?from=1&to=2"
    assert f"Study page: {page}" in text and f"Compare versions 1 and 2: {compare}" in text
    assert f'Study page: <a href="{page}">' in html
    assert f'<a href="{compare.replace("&", "&amp;")}">' in html
    assert "<li>status.overallStatus — changed: RECRUITING → COMPLETED</li>" in html


def test_json_target_gets_title_and_plain_text_with_a_stable_message_id(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """A json:// service gets the title and the plain-text body; the id header is stored."""
    sync_ids(app, STUDY)
    add(app, json_url(receiver))
    set_status(fake, STUDY, "SUSPENDED")
    sync_ids(app, STUDY)
    assert notify(app) == 1
    (got,) = receiver.delivered()
    (row,) = notifications(app.db)
    body = got.json()
    assert body["title"] == row.title == f"{STUDY}: status RECRUITING → SUSPENDED (+2 more)"
    assert body["message"] == row.body_text
    assert body["message"].splitlines()[:2] == [
        study_row(app.db, STUDY).title,
        f"{STUDY} · version 2 · recorded {row.created_at:%Y-%m-%d}",
    ]
    assert "- status RECRUITING → SUSPENDED" in body["message"]
    assert got.headers["ctmirror-message-id"] == row.message_id
    assert (row.status, row.attempts, row.nct_id, row.version) == (
        DeliveryStatus.DELIVERED, 1, STUDY, 2,
    )  # fmt: skip


# -- filters and rules --------------------------------------------------------------------------


def test_field_nct_and_class_filters_choose_versions(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """--field keeps its fields, --nct its study, --class versions of that class."""
    sync_ids(app, STUDY, OTHER)
    add(app, json_url(receiver), name="fields", fields=["status.overallStatus"])
    add(app, json_url(receiver), name="other", nct_ids=[OTHER])
    add(app, json_url(receiver), name="stopped", classes=["status.stopped"])
    set_status(fake, STUDY, "SUSPENDED")
    set_enrollment(fake, OTHER, 2)
    sync_ids(app, STUDY, OTHER)
    notify(app)
    got = {(r.json()["title"].split(":")[0], r.json()["message"].count("\n- ")) for r in
           receiver.delivered()}  # fmt: skip
    by_target = {d.target_id: d for d in notifications(app.db)}
    assert sorted(by_target) == [1, 2, 3] and len(got) == 3
    assert by_target[1].title == f"{STUDY}: status RECRUITING → SUSPENDED"  # one field: no "more"
    assert by_target[2].nct_id == OTHER and by_target[2].title.startswith(f"{OTHER}: enrollment")
    assert by_target[3].nct_id == STUDY


def test_rule_threshold_on_enrollment_percent(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """`enrollment.* |percent| >= 20`: a 10% change sends nothing, a 50% cut sends a message."""
    sync_ids(app, STUDY, OTHER)
    add(app, json_url(receiver), rules=["enrollment.* |percent| >= 20%"])
    set_enrollment(fake, STUDY, 1.1)
    set_enrollment(fake, OTHER, 0.5)
    sync_ids(app, STUDY, OTHER)
    notify(app)
    (title,) = titles(receiver)
    assert title.startswith(f"{OTHER}: enrollment ") and "(-50.0%), major" in title


def test_rules_are_alternatives_and_combine_with_fields(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """Two rules: either may match; --field still limits the lines of the message."""
    sync_ids(app, STUDY, OTHER)
    rules = ["status.stopped", "enrollment.changed major"]
    add(app, json_url(receiver), rules=rules, fields=["design.*"])
    set_status(fake, STUDY, "WITHDRAWN")  # passes a rule, but has no design.* field
    set_enrollment(fake, OTHER, 3)
    sync_ids(app, STUDY, OTHER)
    notify(app)
    (got,) = receiver.delivered()
    lines = [line for line in got.json()["message"].splitlines() if line.startswith("- ")]
    assert lines[-1].startswith("- design.enrollmentCount — changed: ")
    assert all("status." not in line for line in lines)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("enrolment.* |percent| >= 20", "no change class matches 'enrolment.*'"),
        ("dates.slipped percent >= 20", "dates.slipped has no parameter 'percent'"),
        ("dates.slipped shift_days >= 30%", "'%' does not fit shift_days"),
        ("enrollment.changed percent >=", "percent needs a value after its operator"),
        ("status.* from", "from must be followed by an operator"),
        ("enrollment.changed major >= yes", ">= compares numbers or dates"),
    ],
)
def test_bad_rule_is_refused_at_add(run: Any, rule: str, message: str, receiver: Receiver) -> None:
    """A rule that cannot be read or never matches: exit 2, the problem named, nothing added."""
    result = run("notify", "add", json_url(receiver), "--rule", rule, expect=2)
    assert result.stderr.startswith(f"error: rule {rule!r}: ")
    assert message in result.stderr
    assert orjson.loads(run("notify", "list", "--format", "json").stdout) == []


# -- digests ------------------------------------------------------------------------------------


def test_daily_digest_groups_the_days_versions_by_study_at_its_time(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """Nothing before 08:00; at 08:00 one message with both studies; an empty day sends nothing."""
    sync_ids(app, STUDY, OTHER)
    target = add(app, json_url(receiver), digest="daily", at="08:00")
    due = target.next_digest_at
    assert due is not None and (due.hour, due.minute) == (8, 0)
    set_status(fake, STUDY, "SUSPENDED")
    set_enrollment(fake, OTHER, 2)
    sync_ids(app, STUDY, OTHER)
    set_status(fake, STUDY, "RECRUITING")
    sync_ids(app, STUDY)
    assert notify(app, clock=lambda: due - timedelta(minutes=1)) == 0
    assert notifications(app.db) == []
    assert notify(app, clock=lambda: due + timedelta(minutes=1)) == 1
    (got,) = receiver.delivered()
    assert got.json()["title"] == "ctmirror daily digest: 2 studies changed (3 versions)"
    message = got.json()["message"]
    assert message.startswith("2 studies changed, ")
    assert f"{STUDY} — {study_row(app.db, STUDY).title}" in message
    assert f"Version 2 ({datetime.now(UTC):%Y-%m-%d}): status RECRUITING → SUSPENDED" in message
    assert "Version 3 (" in message and "status SUSPENDED → RECRUITING" in message
    assert f"/trials/{STUDY}/compare?from=1&to=3" in message
    assert f"/trials/{OTHER}/compare?from=1&to=2" in message
    (row,) = notifications(app.db)
    assert (row.outbox_id, row.changes, row.status) == (None, 3, DeliveryStatus.DELIVERED)
    assert notify(app, clock=lambda: due + timedelta(days=1, minutes=1)) == 0
    assert len(receiver.delivered()) == 1
    with app.db.session() as session:
        stored = session.get(NotificationTarget, target.id)
        items = list(session.scalars(select(DigestItem.delivery_id)))
    assert stored is not None and stored.next_digest_at == due + timedelta(days=2)
    assert items == [row.id] * 3


def test_digest_is_built_once_when_daemons_race_for_it(fake: FakeCtgov, app: App) -> None:
    """Two builders at the same moment, each on its own connection: one digest, not two."""
    sync_ids(app, STUDY)
    target = add(app, "json://127.0.0.1:9/hook", digest="weekly", at="fri 18:30")
    set_status(fake, STUDY, "TERMINATED")
    sync_ids(app, STUDY)
    fan_out(app.db, Links.of(app.settings))
    assert target.next_digest_at is not None and target.next_digest_at.weekday() == 4
    later = target.next_digest_at + timedelta(seconds=1)
    start = threading.Barrier(2)
    built: list[int] = []

    def build() -> None:
        own = build_app(load_settings())
        start.wait()
        built.append(build_due_digests(own.db, "http://mirror.test", "UTC", later))
        own.close()

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(built) == [0, 1]
    (row,) = notifications(app.db)
    assert row.title == "ctmirror weekly digest: 1 study changed (1 version)"


# -- failures and retries -----------------------------------------------------------------------


def test_service_down_then_back_loses_nothing(
    fake: FakeCtgov, app: App, receiver: Receiver, run: Any
) -> None:
    """A stopped service: failures are listed with why, retried, and all arrive once it is back."""
    sync_ids(app, STUDY, OTHER)
    add(app, json_url(receiver))
    receiver.stop()
    with RunningDaemon(app):
        set_status(fake, STUDY, "TERMINATED")
        set_status(fake, OTHER, "SUSPENDED")
        sync_ids(app, STUDY, OTHER)
        retried = wait_until(
            lambda: min((d.attempts for d in notifications(app.db)), default=0) >= 3
        )
        assert retried, [d.attempts for d in notifications(app.db)]
        listed = orjson.loads(run("notify", "deliveries", "--format", "json").stdout)
        assert {d["status"] for d in listed} <= {"failed", "pending"}
        assert all("Connection error" in (d["last_error"] or "") for d in listed if d["attempts"])
        receiver.start()
        arrived = receiver.wait_for(2)
    rows = notifications(app.db)
    assert [d.status for d in rows] == [DeliveryStatus.DELIVERED] * 2
    assert sorted(r.headers["ctmirror-message-id"] for r in arrived) == sorted(
        d.message_id for d in rows
    )


def test_error_answers_make_a_notification_dead_then_replay_sends_it(
    fake: FakeCtgov, receiver: Receiver, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service answering 500: each attempt recorded, dead after max_attempts, replayable."""
    receiver.behaviour.status = 500
    app = app_with(monkeypatch, "notifications", max_attempts=3)
    sync_ids(app, STUDY)
    add(app, json_url(receiver))
    set_status(fake, STUDY, "WITHDRAWN")
    sync_ids(app, STUDY)
    assert notify(app) == 3
    (dead,) = notifications(app.db)
    assert (dead.status, dead.attempts) == (DeliveryStatus.DEAD, 3)
    assert "error=500" in (dead.last_error or "")
    listed = run("notify", "deliveries", "--status", "dead", "--format", "json")
    assert [(d["id"], d["kind"], d["title"]) for d in orjson.loads(listed.stdout)] == [
        (dead.id, "version", dead.title)
    ]
    receiver.behaviour.status = 200
    replayed = run("notify", "deliveries", "--replay", str(dead.id))
    assert replayed.stdout == f"notification {dead.id} ({dead.message_id}) replayed: sent\n"
    assert [r.headers["ctmirror-message-id"] for r in receiver.delivered()] == [dead.message_id]
    assert notifications(app.db)[0].status is DeliveryStatus.DELIVERED
    app.close()


def test_smtp_server_refusing_mail_is_a_failed_attempt(
    fake: FakeCtgov, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SMTP 554 answer is recorded on the delivery; the next attempt after it is fixed works."""
    mailbox.refuse_with = "554 5.7.1 mailbox unavailable"
    app = app_with(monkeypatch, "notifications", max_attempts=2)
    sync_ids(app, STUDY)
    add(app, mailbox.url())
    set_status(fake, STUDY, "COMPLETED")
    sync_ids(app, STUDY)
    notify(app)
    (row,) = notifications(app.db)
    assert (row.status, row.attempts) == (DeliveryStatus.DEAD, 2)
    assert row.last_error == 'Sending email to "person@example.org" failed.'
    assert mailbox.messages == []
    app.close()


# -- safety -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("json://169.254.169.254/latest", "169.254.169.254 is a link-local, metadata or reserved"),
        ("json://2852039166/hook", "169.254.169.254 is a link-local, metadata or reserved"),
        ("xml://0xa9fea9fe/hook", "169.254.169.254 is a link-local, metadata or reserved"),
        ("forms://[fe80::1]/hook", "fe80::1 is a link-local, metadata or reserved"),
        ("json://metadata.google.internal/", "metadata.google.internal is a cloud metadata"),
        ("mailto://u:p@example.org?smtp=0251.0376.0251.0376", "169.254.169.254 is a link-local"),
        ("json://10.1.2.3/hook", "10.1.2.3 is a private address (notifications.allow_private"),
        ("windows://", "scheme 'windows' is not a service ctmirror sends to"),
        ("syslog://", "scheme 'syslog' is not a service ctmirror sends to"),
        ("dbus://", "scheme 'dbus' is not a service ctmirror sends to"),
        ("nosuch://example.org", "scheme 'nosuch' is not a service ctmirror sends to"),
        ("https://example.org/hook", "scheme 'https' is not a service ctmirror sends to"),
        ("example.org", "no scheme is not a service ctmirror sends to"),
        ("json://", "not a valid json:// URL"),
        ("slack://", "not a valid slack:// URL (An invalid Slack (first) Token () was specified.)"),
        ("mailto://a@example.org?attach=/etc/passwd", "attach= is not accepted"),
        ("mailto://a@example.org?pgppub=/etc/passwd", "pgppub= is not accepted"),
    ],
)
def test_refused_targets_are_a_usage_error(run: Any, url: str, message: str) -> None:
    """Metadata, link-local (however spelt), private addresses, non-network schemes, malformed
    URLs and local files: exit 2 naming the problem, nothing added."""
    result = run("notify", "add", url, expect=2)
    assert result.stderr.startswith("error: notification URL")
    assert message in result.stderr
    assert orjson.loads(run("notify", "list", "--format", "json").stdout) == []


def test_private_service_needs_allow_private(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """10.0.0.0/8 is refused by default and accepted with notifications.allow_private = true."""
    run("notify", "add", "json://10.1.2.3/hook", expect=2)
    monkeypatch.setenv("CTMIRROR_NOTIFICATIONS__ALLOW_PRIVATE", "true")
    run.env["CTMIRROR_NOTIFICATIONS__ALLOW_PRIVATE"] = "true"
    added = run("notify", "add", "json://10.1.2.3/hook")
    assert added.stdout.startswith("added notification target 1 (json-1) -> json://10.1.2.3/hook")


def test_host_is_resolved_and_checked_again_before_each_send(
    fake: FakeCtgov, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name resolving to loopback is refused at send time once loopback is not allowed."""
    app = build_app(load_settings())
    sync_ids(app, STUDY)
    add(app, f"json://localhost:{receiver.port}/hook")
    set_status(fake, STUDY, "SUSPENDED")
    sync_ids(app, STUDY)
    app.close()
    strict = app_with(monkeypatch, "notifications", allow_loopback=False, max_attempts=1)
    notify(strict)
    (row,) = notifications(strict.db)
    assert row.status is DeliveryStatus.DEAD
    assert row.last_error is not None and row.last_error.startswith("refused: localhost resolves")
    assert "is a loopback address (notifications.allow_loopback is off)" in row.last_error
    assert receiver.received == []
    strict.close()


def test_dns_answer_pointing_at_metadata_is_never_connected_to(
    app: App, receiver: Receiver
) -> None:
    """A name whose answer includes 169.254.169.254 is refused whole; one that does not is sent."""

    def resolver(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        found = {"rebind.example": ["127.0.0.1", "169.254.169.254"], "ok.example": ["127.0.0.1"]}
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in found[host]]

    notifier = AppriseNotifier(app.settings.notifications, resolver=resolver)
    refused = asyncio.run(notifier.send(f"json://rebind.example:{receiver.port}/h", "t", "x", "x"))
    assert not refused.ok and receiver.received == []
    assert "169.254.169.254 is a link-local, metadata or reserved address" in (refused.error or "")
    sent = asyncio.run(notifier.send(f"json://ok.example:{receiver.port}/h", "t", "x", "x"))
    assert sent.ok and [r.json()["title"] for r in receiver.delivered()] == ["t"]


def test_redirect_to_a_metadata_address_is_refused_where_it_connects(
    app: App, receiver: Receiver
) -> None:
    """A service redirecting to 169.254.169.254 gets no request there: the guard refuses it."""
    receiver.behaviour.redirect_to = "http://169.254.169.254/latest/meta-data/"
    notifier = app.notifier()
    result = asyncio.run(notifier.send(json_url(receiver), "t", "x", "x"))
    assert not result.ok
    assert "refused: 169.254.169.254 is a link-local, metadata or reserved" in (result.error or "")
    assert [r.path for r in receiver.received] == ["/hook"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # on loopback only
def test_credentials_are_never_listed_logged_or_counted(
    fake: FakeCtgov, app: App, run: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """The SMTP password and a header token appear in no listing, no log line, no db stats;
    the mail server still gets the login."""
    password, token = "s3cret-Pa55word", "tok-9f8e7d6c5b4a"
    with Mailbox(user="reader", password=password) as box:
        sync_ids(app, STUDY)
        added = run("notify", "add", box.url(), "--name", "mine")
        run("notify", "add", f"json://127.0.0.1:9/h/{token}?+X-Api-Key={token}", "--name", "api")
        set_status(fake, STUDY, "COMPLETED")
        sync_ids(app, STUDY)
        log = tmp_path / "daemon.log"
        child = spawn_daemon({**env, "CTMIRROR_LOG__LEVEL": "debug"}, "--once", log=log)
        child.communicate(timeout=60)
        (mail,) = box.wait_for(1)
        assert box.logins == ["reader"] and mail["Subject"].startswith(STUDY)
    listed = orjson.loads(run("notify", "list", "--format", "json").stdout)
    outputs = [added.stdout, run("notify", "list").stdout, run("notify", "deliveries").stdout,
               run("db", "stats").stdout, log.read_text()]  # fmt: skip
    for text in [*outputs, orjson.dumps(listed).decode()]:
        assert password not in text and token not in text
    assert "mailto://reader:****@127.0.0.1:" in listed[0]["url"]
    assert listed[1]["url"] == "json://127.0.0.1:9/h/…?+X-Api-Key=****"
    assert "notification.delivery" in {e["event"] for e in log_events(log)}


def test_test_message_reaches_the_target(run: Any, receiver: Receiver) -> None:
    """`notify test NAME` sends a test message now and says how it went."""
    run("notify", "add", json_url(receiver), "--name", "desk")
    tested = run("notify", "test", "desk")
    assert tested.stdout.startswith(f"test message to {json_url(receiver)}: sent (")
    (got,) = receiver.delivered()
    assert got.json()["title"] == "ctmirror: test notification"
    receiver.stop()
    failed = run("notify", "test", "1", expect=1)
    assert "failed: A Connection error occurred sending JSON notification" in failed.stdout


# -- several daemons, crashes -------------------------------------------------------------------


def test_two_daemons_send_each_notification_once(
    fake: FakeCtgov, env: dict[str, str], app: App, receiver: Receiver, tmp_path: Path
) -> None:
    """Two daemons on one database share the sending: every message arrives exactly once."""
    ids = [STUDY, OTHER, *[i for i in all_study_ids() if i not in (STUDY, OTHER)][:6]]
    put_real(fake, ids)
    sync_ids(app, *ids)
    add(app, json_url(receiver))
    daemons = [spawn_daemon(env, log=tmp_path / f"{n}.log") for n in range(2)]
    try:
        for nct_id in ids:
            set_status(fake, nct_id, "WITHDRAWN")
        sync_ids(app, *ids)
        done = wait_until(
            lambda: [d.status for d in notifications(app.db)] == [DeliveryStatus.DELIVERED] * 8,
            timeout=40,
        )
        time.sleep(1)  # time enough for a duplicate, were there one
    finally:
        codes = terminate(daemons)
    assert done and codes == [0, 0]
    sent = Counter(r.headers["ctmirror-message-id"] for r in receiver.delivered())
    assert sorted(sent.values()) == [1] * 8
    assert set(sent) == {d.message_id for d in notifications(app.db)}


def test_kill_9_while_sending_loses_nothing(
    fake: FakeCtgov, env: dict[str, str], app: App, receiver: Receiver, run: Any
) -> None:
    """A daemon killed mid-send: its claim runs out and the message is sent again, same id."""
    sync_ids(app, STUDY)
    add(app, json_url(receiver))
    set_status(fake, STUDY, "TERMINATED")
    sync_ids(app, STUDY)
    receiver.behaviour.hang_rate, receiver.behaviour.hang_seconds = 1.0, 3.0
    child = spawn_daemon(env)
    try:
        assert wait_until(lambda: receiver.received, timeout=30), "nothing was sent"
    finally:
        child.kill()
        child.wait()
    (row,) = notifications(app.db)
    assert (row.status, row.attempts, row.claimed_by is not None) == (
        DeliveryStatus.PENDING, 0, True,
    )  # fmt: skip
    with app.db.write() as session:  # the lease runs out, as it would LEASE_MARGIN later
        session.execute(update(NotificationDelivery).values(lease_until=utcnow()))
    receiver.behaviour.hang_rate = 0.0
    finished = run("daemon", "--once")
    assert finished.stdout.endswith(", 1 notification attempts\n")
    (row,) = notifications(app.db)
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert len(receiver.received) == 2
    assert {r.headers["ctmirror-message-id"] for r in receiver.received} == {row.message_id}

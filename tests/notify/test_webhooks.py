"""Webhooks end to end: the fake API as the source, a real HTTP receiver as the subscriber.

Every test syncs real records over loopback into a real database (SQLite and PostgreSQL),
lets the dispatcher deliver, and checks what the receiver got: bodies, signatures verified
with the standardwebhooks library, webhook-ids across retries, and delivery rows.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from daemon_helpers import RunningDaemon, app_with, deliveries, wait_until
from fake_ctgov import FakeCtgov
from helpers import STUDY, count, events, module, put_real, sponsor_update, sync_ids
from receiver import Receiver
from sqlalchemy import select

from mirror.app import App, build_app
from mirror.config import load_settings
from mirror.errors import UsageError
from mirror.notify import (
    Dispatcher,
    EgressPolicy,
    HttpSender,
    SendResult,
    SubscriptionSpec,
    add_subscription,
)
from mirror.store import (
    DeliveryStatus,
    OutboxEntry,
    StudyVersion,
    SubscriptionState,
    WebhookSubscription,
)

OTHER = "NCT05305430"


pytestmark = pytest.mark.usefixtures("fast_daemon")


@pytest.fixture
def fake(fake_api: FakeCtgov) -> FakeCtgov:
    put_real(fake_api, [STUDY, OTHER])
    return fake_api


def subscribe(app: App, url: str, **filters: Any) -> tuple[int, str]:
    """A subscription made through the library, as the CLI makes it: (id, secret)."""
    sub, secret = add_subscription(app.db, SubscriptionSpec(url, **filters), EgressPolicy())
    return sub.id, secret


def set_status(fake: FakeCtgov, nct_id: str, status: str) -> None:
    """A status change posted the way sponsors post (with new update dates)."""
    sponsor_update(fake, nct_id, lambda s: module(s, "statusModule").update(overallStatus=status))


def dispatch(app: App) -> int:
    """Deliver with a real sender until nothing is pending or retrying; attempts made."""

    async def go() -> int:
        sender = HttpSender(app.settings.webhooks)
        dispatcher = Dispatcher(app.db, app.settings, sender, "test")
        attempts = 0
        try:
            while True:
                attempts += await dispatcher.drain()
                if not any(d.status in RETRYING for d in deliveries(app.db)):
                    return attempts
                await asyncio.sleep(0.01)
        finally:
            await sender.aclose()

    return asyncio.run(go())


RETRYING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


# -- what arrives -------------------------------------------------------------------------


def test_change_reaches_receiver_signed_with_the_subscribers_secret(
    fake: FakeCtgov, app: App, receiver: Receiver, run: Any
) -> None:
    """A status change synced by `daemon --once` arrives once, signed, with its events."""
    run("watch", "add", "mine", STUDY, "--schedule", "every 1s")
    added = run("webhooks", "add", receiver.url, "--format", "json")
    secret = orjson.loads(added.stdout)[0]["secret"]
    run("daemon", "--once")
    assert receiver.received == []  # first sight is not delivered unless asked for
    set_status(fake, STUDY, "COMPLETED")
    wait_until(lambda: False, timeout=1.05)
    result = run("daemon", "--once")
    assert "1 run, 0 failed; 1 webhook attempts" in result.stdout
    (got,) = receiver.delivered()
    body = got.verify(secret)
    stored = {e.field: e.as_dict() for e in events(app.db, STUDY, 2)}
    assert body == {
        "type": "study.changed",
        "id": got.headers["webhook-id"],
        "nct_id": STUDY,
        "version": 2,
        "observed_at": stored["status.overallStatus"]["observed_at"],
        "changes": sorted(stored.values(), key=lambda e: e["id"]),
        "classes": [{"name": "status.completed", "from": "RECRUITING"}],
        "links": {
            "page": f"http://127.0.0.1:8000/trials/{STUDY}.md",
            "api": f"http://127.0.0.1:8000/v1/studies/{STUDY}/versions/2",
        },
    }
    assert stored["status.overallStatus"]["new"] == "COMPLETED"
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.headers["content-type"] == "application/json"


def test_field_glob_subscription_gets_only_matching_changes(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """A `status.*` subscription receives status fields only, and nothing for other edits."""
    sync_ids(app, STUDY, OTHER)
    _, secret = subscribe(app, receiver.url, fields=["status.*"])

    def edit(study: dict[str, Any]) -> None:
        module(study, "statusModule")["overallStatus"] = "SUSPENDED"
        module(study, "designModule")["enrollmentInfo"]["count"] = 7

    fake.edit(STUDY, edit)
    fake.edit(OTHER, lambda s: module(s, "designModule")["enrollmentInfo"].update(count=9))
    sync_ids(app, STUDY, OTHER)
    assert dispatch(app) == 1
    (got,) = receiver.delivered()
    body = got.verify(secret)
    assert (body["nct_id"], body["type"]) == (STUDY, "study.changed")
    assert [(c["field"], c["old"], c["new"]) for c in body["changes"]] == [
        ("status.overallStatus", "RECRUITING", "SUSPENDED")
    ]


def test_class_subscription_gets_only_versions_of_that_class(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """A `status.stopped` subscription gets the suspended study, not the enrollment edit."""
    sync_ids(app, STUDY, OTHER)
    _, secret = subscribe(app, receiver.url, classes=["status.stop*"])
    set_status(fake, STUDY, "SUSPENDED")
    fake.edit(OTHER, lambda s: module(s, "designModule")["enrollmentInfo"].update(count=9))
    sync_ids(app, STUDY, OTHER)
    assert dispatch(app) == 1
    (got,) = receiver.delivered()
    body = got.verify(secret)
    assert body["nct_id"] == STUDY
    assert [(c["name"], c["to"]) for c in body["classes"]] == [("status.stopped", "SUSPENDED")]


def test_nct_subscription_gets_only_that_study(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """A subscription with --nct receives that study's versions and no other's."""
    sync_ids(app, STUDY, OTHER)
    subscribe(app, receiver.url, nct_ids=[OTHER])
    set_status(fake, STUDY, "SUSPENDED")
    set_status(fake, OTHER, "SUSPENDED")
    sync_ids(app, STUDY, OTHER)
    dispatch(app)
    assert [(r.json()["nct_id"], r.json()["version"]) for r in receiver.delivered()] == [(OTHER, 2)]


def test_kind_and_watch_filters(fake: FakeCtgov, app: App, receiver: Receiver, run: Any) -> None:
    """--kind removed gets removed events only; --watch limits to the watch's studies."""
    run("watch", "add", "others", OTHER)
    run("sync", "--watch", "others")
    sync_ids(app, STUDY)
    subscribe(app, receiver.url, kinds=["removed"], watches=["others"])

    def drop_site(study: dict[str, Any]) -> None:
        module(study, "contactsLocationsModule")["locations"].pop(0)

    sponsor_update(fake, STUDY, drop_site)
    sponsor_update(fake, OTHER, drop_site)
    sync_ids(app, STUDY, OTHER)
    dispatch(app)
    (got,) = receiver.delivered()
    assert got.json()["nct_id"] == OTHER
    assert {(c["kind"], c["field"].split(".")[0]) for c in got.json()["changes"]} == {
        ("removed", "locations")
    }


def test_include_initial_delivers_first_sight_as_study_created(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """With include_initial, a study's first version arrives as one study.created message."""
    subscribe(app, receiver.url, include_initial=True, fields=["status.overallStatus"])
    sync_ids(app, STUDY)
    dispatch(app)
    (got,) = receiver.delivered()
    assert got.json()["type"] == "study.created"
    assert [(c["field"], c["kind"], c["new"], c["initial"]) for c in got.json()["changes"]] == [
        ("status.overallStatus", "added", "RECRUITING", True)
    ]


def test_study_gone_is_delivered_as_study_removed(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """A study that leaves the registry arrives as study.removed, even under a field filter."""
    sync_ids(app, STUDY)
    subscribe(app, receiver.url, fields=["status.*"])
    fake.remove(STUDY)
    sync_ids(app, STUDY)
    dispatch(app)
    (got,) = receiver.delivered()
    assert (got.json()["type"], got.json()["version"]) == ("study.removed", 2)
    assert [(c["field"], c["kind"]) for c in got.json()["changes"]] == [("study", "removed")]


def test_subscription_never_gets_versions_older_than_itself(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """Versions recorded before a subscription existed are not delivered to it."""
    sync_ids(app, STUDY)
    set_status(fake, STUDY, "SUSPENDED")
    sync_ids(app, STUDY)
    subscribe(app, receiver.url)
    assert dispatch(app) == 0
    assert receiver.received == []


def test_outbox_row_per_version_written_with_it(fake: FakeCtgov, app: App) -> None:
    """Every stored version has exactly one outbox row, with or without subscriptions."""
    sync_ids(app, STUDY, OTHER)
    set_status(fake, STUDY, "SUSPENDED")
    fake.remove(OTHER)
    sync_ids(app, STUDY, OTHER)
    with app.db.session() as session:
        versions = set(session.execute(select(StudyVersion.study_id, StudyVersion.version)))
        outbox = list(session.execute(select(OutboxEntry.study_id, OutboxEntry.version)))
    assert len(versions) == 4
    assert sorted(outbox) == sorted(versions)  # type: ignore[type-var]


# -- failures and retries -----------------------------------------------------------------


def test_receiver_down_for_several_retries_then_up_loses_nothing(
    fake: FakeCtgov, app: App, receiver: Receiver
) -> None:
    """Deliveries to a stopped receiver are retried and all arrive once it is back."""
    subscribe(app, receiver.url, include_initial=True, fields=["status.*"])
    receiver.stop()
    with RunningDaemon(app):
        sync_ids(app, STUDY, OTHER)
        set_status(fake, STUDY, "TERMINATED")
        sync_ids(app, STUDY)
        retried = wait_until(lambda: min((d.attempts for d in deliveries(app.db)), default=0) >= 4)
        assert retried, [d.attempts for d in deliveries(app.db)]
        receiver.start()
        arrived = receiver.wait_for(3)
    rows = deliveries(app.db)
    assert [d.status for d in rows] == [DeliveryStatus.DELIVERED] * 3
    assert {r.webhook_id for r in arrived} == {d.message_id for d in rows}
    assert len(arrived) == 3
    assert all("ConnectError" in (d.last_error or "") or d.last_error is None for d in rows)


def test_flaky_receiver_gets_everything_eventually(
    fake: FakeCtgov, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 half the time and hangs past the timeout: every delivery arrives, retries share ids."""
    receiver.behaviour.fail_rate = 0.5
    receiver.behaviour.hang_rate = 0.15
    receiver.behaviour.hang_seconds = 0.6
    receiver.behaviour.max_failures_per_id = 6
    app = app_with(monkeypatch, "webhooks", timeout_seconds=0.3, max_attempts=10, concurrency=4)
    subscribe(app, receiver.url, include_initial=True, fields=["status.overallStatus"])
    put_real(fake, _more_ids(fake, 12))
    with RunningDaemon(app):
        sync_ids(app, *fake.ids())
        done = wait_until(lambda: _statuses(app) == [DeliveryStatus.DELIVERED] * 14, 30)
    app.close()
    rows = deliveries(app.db)
    assert done and len(rows) == len(fake.ids()) == 14
    assert set(receiver.delivered_ids()) == {d.message_id for d in rows}
    assert {r.webhook_id for r in receiver.received} == {d.message_id for d in rows}
    assert receiver.hung > 0 and receiver.failed > 0
    # Every request that arrived was an attempt (one cut by the 0.3 s deadline before the
    # receiver read it arrives never: a loaded machine does that), and retries repeated ids.
    assert len(rows) < len(receiver.received) <= sum(d.attempts for d in rows)


def _statuses(app: App) -> list[DeliveryStatus]:
    return [d.status for d in deliveries(app.db)]


def _more_ids(fake: FakeCtgov, n: int) -> list[str]:
    from fake_ctgov import all_study_ids

    return [i for i in all_study_ids() if i not in fake.ids()][:n]


def test_dead_after_max_attempts_then_replay_redelivers(
    fake: FakeCtgov, receiver: Receiver, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that always fails makes the delivery dead; a replay sends the same id again."""
    receiver.behaviour.status = 503
    app = app_with(monkeypatch, "webhooks", max_attempts=3)
    _, secret = subscribe(app, receiver.url, fields=["status.*"])
    sync_ids(app, STUDY)
    set_status(fake, STUDY, "WITHDRAWN")
    sync_ids(app, STUDY)
    assert dispatch(app) == 3
    (dead,) = deliveries(app.db)
    assert (dead.status, dead.attempts, dead.last_status_code) == (DeliveryStatus.DEAD, 3, 503)
    assert [r.webhook_id for r in receiver.received] == [dead.message_id] * 3
    listed = run("webhooks", "deliveries", "--status", "dead", "--format", "json")
    assert [d["id"] for d in orjson.loads(listed.stdout)] == [dead.id]
    receiver.behaviour.status = 200
    replayed = run("webhooks", "deliveries", "--replay", str(dead.id))
    assert f"delivery {dead.id} ({dead.message_id}) replayed: HTTP 200" in replayed.stdout
    (got,) = receiver.delivered()
    assert (got.webhook_id, got.verify(secret)["nct_id"]) == (dead.message_id, STUDY)
    assert deliveries(app.db)[0].status is DeliveryStatus.DELIVERED
    app.close()


def test_subscription_paused_after_consecutive_dead_deliveries(
    fake: FakeCtgov, receiver: Receiver, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N dead deliveries in a row pause the subscription; resume makes it active again."""
    receiver.behaviour.status = 500
    app = app_with(monkeypatch, "webhooks", max_attempts=1, pause_after_dead=2)
    sub_id, _ = subscribe(app, receiver.url, include_initial=True)
    sync_ids(app, STUDY, OTHER)
    dispatch(app)
    with app.db.session() as session:
        sub = session.get(WebhookSubscription, sub_id)
        assert sub is not None
        assert (sub.state, sub.consecutive_dead) == (SubscriptionState.PAUSED, 2)
    set_status(fake, STUDY, "SUSPENDED")
    sync_ids(app, STUDY)
    assert dispatch(app) == 0  # paused: nothing more is sent
    listed = orjson.loads(run("webhooks", "list", "--format", "json").stdout)
    assert [s["state"] for s in listed] == ["paused"]
    run("webhooks", "resume", str(sub_id))
    listed = orjson.loads(run("webhooks", "list", "--format", "json").stdout)
    assert [s["state"] for s in listed] == ["active"]
    app.close()


def test_redirect_is_not_followed(
    fake: FakeCtgov, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 307 answer is a failed attempt, and the redirect target is never requested."""
    receiver.behaviour.redirect_to = receiver.url.replace("/hook", "/elsewhere")
    app2 = app_with(monkeypatch, "webhooks", max_attempts=1)
    subscribe(app2, receiver.url, include_initial=True, fields=["status.overallStatus"])
    sync_ids(app2, STUDY)
    dispatch(app2)
    (row,) = deliveries(app2.db)
    assert (row.status, row.last_status_code) == (DeliveryStatus.DEAD, 307)
    assert [r.path for r in receiver.received] == ["/hook"]
    app2.close()


def test_response_body_is_read_up_to_the_cap(
    fake: FakeCtgov, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge error body is cut at webhooks.max_response_bytes."""
    receiver.behaviour.status = 500
    receiver.behaviour.body = b"x" * 200_000
    app = app_with(monkeypatch, "webhooks", max_attempts=1, max_response_bytes=100)
    subscribe(app, receiver.url, include_initial=True, fields=["status.overallStatus"])
    sync_ids(app, STUDY)
    dispatch(app)
    (row,) = deliveries(app.db)
    assert row.last_error == "HTTP 500: " + "x" * 100
    app.close()


def test_an_answer_holding_nul_characters_is_recorded(
    fake: FakeCtgov, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver's error body with NUL characters: the attempt is recorded (NUL as U+FFFD)."""
    receiver.behaviour.status = 500
    receiver.behaviour.body = b"bad\x00answer"
    app = app_with(monkeypatch, "webhooks", max_attempts=1)
    subscribe(app, receiver.url, include_initial=True, fields=["status.overallStatus"])
    sync_ids(app, STUDY)
    dispatch(app)
    (row,) = deliveries(app.db)
    assert (row.status, row.last_error) == (DeliveryStatus.DEAD, "HTTP 500: bad\ufffdanswer")
    app.close()


# -- safety -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "ftp://example.org/hook",
        "http://user:pw@example.org/hook",
        "http://[/hook",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://q\u00e4f\U00072b520/hook",  # a host IDNA cannot encode
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
    ],
)
def test_metadata_link_local_and_odd_urls_are_refused(run: Any, url: str) -> None:
    """Metadata and link-local addresses, other schemes and URL credentials: exit 2."""
    result = run("webhooks", "add", url, expect=2)
    assert result.stderr.startswith("error: webhook URL")
    assert run("webhooks", "list", "--format", "json").stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "address"),
    [("http://2852039166/", "169.254.169.254"), ("http://0xa9fea9fe/", "169.254.169.254"),
     ("http://0x7f.1/", "127.0.0.1"), ("http://10.1/", "10.0.0.1")],
)  # fmt: skip
def test_numeric_host_spellings_are_checked_as_the_address_they_spell(
    url: str, address: str
) -> None:
    """Decimal, hex, octal and short IPv4 hosts are judged as the address delivery reaches."""
    strict = EgressPolicy(allow_private=False, allow_loopback=False)
    with pytest.raises(UsageError, match=f"refused: {re.escape(address)} is a"):
        strict.check_url(url)


def test_private_addresses_need_allow_private(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """10.0.0.0/8 is refused by default and accepted with webhooks.allow_private = true."""
    refused = run("webhooks", "add", "http://10.1.2.3/hook", expect=2)
    assert "10.1.2.3 is a private address (webhooks.allow_private is off)" in refused.stderr
    monkeypatch.setenv("CTMIRROR_WEBHOOKS__ALLOW_PRIVATE", "true")
    run.env["CTMIRROR_WEBHOOKS__ALLOW_PRIVATE"] = "true"
    assert run("webhooks", "add", "http://10.1.2.3/hook").stdout.startswith("added webhook 1")


def test_address_is_checked_again_at_delivery_time(
    fake: FakeCtgov, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that resolves to loopback is refused when loopback is no longer allowed."""
    app = build_app(load_settings())
    subscribe(app, receiver.url.replace("127.0.0.1", "localhost"), include_initial=True)
    sync_ids(app, STUDY)
    app.close()
    strict = app_with(monkeypatch, "webhooks", allow_loopback=False, max_attempts=1)
    dispatch(strict)
    (row,) = deliveries(strict.db)
    assert row.status is DeliveryStatus.DEAD
    assert "is a loopback address (webhooks.allow_loopback is off)" in (row.last_error or "")
    assert receiver.received == []
    strict.close()


def test_dns_answer_pointing_at_metadata_is_refused(app: App, receiver: Receiver) -> None:
    """A name whose DNS answer includes 169.254.169.254 is never connected to (rebinding)."""

    async def rebinding(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "169.254.169.254"]

    async def go() -> Any:
        sender = HttpSender(app.settings.webhooks, resolver=rebinding)
        try:
            return await sender.send(f"http://hooks.example:{receiver.port}/h", "whsec_" + "A" * 32,
                                     "msg_1", "{}")  # fmt: skip
        finally:
            await sender.aclose()

    result = asyncio.run(go())
    assert result.status_code is None
    assert "169.254.169.254 is a link-local, metadata or reserved address" in (result.error or "")
    assert receiver.received == []


def test_secret_is_shown_once_and_never_listed_or_logged(run: Any, receiver: Receiver) -> None:
    """The secret appears in the add output only; list shows a hint; logs never carry it."""
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
    added = run("webhooks", "add", receiver.url, "--secret", secret)
    assert f"secret: {secret}" in added.stdout
    assert secret not in added.stderr
    listed = run("webhooks", "list", "--format", "json")
    assert secret not in listed.stdout
    assert orjson.loads(listed.stdout)[0]["secret_hint"] == "whsec_…dA=="
    tested = run("webhooks", "test", "1")
    assert "HTTP 200" in tested.stdout and secret not in tested.stderr
    assert receiver.delivered()[0].verify(secret)["type"] == "webhook.test"


def test_bad_secret_is_a_usage_error(run: Any, app: App, receiver: Receiver) -> None:
    """A secret that is not whsec_ + base64 of 24..64 bytes is refused without echoing it."""
    result = run("webhooks", "add", receiver.url, "--secret", "hunter2", expect=2)
    assert result.stderr == (
        "error: the secret must be 'whsec_' followed by 24 to 64 base64-encoded bytes\n"
    )
    assert count(app.db, WebhookSubscription) == 0


def test_a_url_the_client_cannot_send_to_is_a_failed_attempt(app: App) -> None:
    """A stored URL httpx cannot even parse (a host IDNA cannot encode) is a failed attempt
    with the reason, never an exception out of the sender."""

    async def go() -> SendResult:
        async with HttpSender(app.settings.webhooks) as sender:
            return await sender.send(
                "http://q\u00e4f\U00072b520/hook", "whsec_" + "a" * 32, "m", "{}"
            )

    result = asyncio.run(go())
    assert (result.ok, result.status_code) == (False, None)
    assert (result.error or "").startswith("InvalidURL: ")

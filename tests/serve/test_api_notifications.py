"""/v1/notifications in-process (httpx.ASGITransport): every route needs the write token; URLs are
shown masked; bad URLs, rules and times are 422s naming the problem; test messages and replays
reach a real receiver."""

from __future__ import annotations

import asyncio

import pytest
from api_client import AUTH, ApiClient, error_of
from fake_ctgov import FakeCtgov
from helpers import STUDY, module, put_real, sponsor_update, sync_ids
from receiver import Receiver

from mirror.app import App
from mirror.config import load_settings


def test_every_notification_route_needs_the_write_token(write_api: ApiClient) -> None:
    """Listing included: no token or a wrong one is 401 in the error format."""
    routes = [("GET", "/v1/notifications"), ("GET", "/v1/notifications/deliveries"),
              ("POST", "/v1/notifications"), ("DELETE", "/v1/notifications/1"),
              ("POST", "/v1/notifications/1/test")]  # fmt: skip
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = write_api.request(method, path, headers=headers, json={"url": "json://x"})
            assert error_of(response)[:2] == (401, "unauthorized"), (method, path)


def test_created_target_is_listed_with_its_credentials_masked(write_api: ApiClient) -> None:
    """POST answers 201; neither the answer, GET nor the list ever shows the password."""
    body = {"url": "mailto://reader:hunter2-pw@example.org?to=me@example.org",
            "name": "inbox", "rules": ["dates.slipped shift_days >= 30 days"],
            "digest": "weekly", "at": "fri 17:00"}  # fmt: skip
    created = write_api.post("/v1/notifications", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    shown = write_api.get(f"/v1/notifications/{created.json()['id']}", headers=AUTH)
    listed = write_api.get("/v1/notifications", headers=AUTH)
    for response in (created, shown, listed):
        assert "hunter2-pw" not in response.text
    target = listed.json()["targets"][0]
    assert target == shown.json() == created.json()
    assert target["url"].startswith("mailto://reader:****@example.org")
    assert (target["name"], target["service"], target["digest"], target["at"]) == (
        "inbox", "E-Mail", "weekly", "fri 17:00",
    )  # fmt: skip
    assert target["rules"] == ["dates.slipped shift_days >= 30"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"url": "json://2852039166/"}, 422, "169.254.169.254 is a link-local"),
        ({"url": "syslog://"}, 422, "scheme 'syslog' is not a service ctmirror sends to"),
        ({"url": "json://example.org", "rules": ["status.* to >= x"]}, 422, ">= compares numbers"),
        ({"url": "json://example.org", "digest": "daily", "at": "7:75"}, 422, "--at '7:75'"),
        ({"url": "json://example.org", "watches": ["nope"]}, 404, "no watch named 'nope'"),
    ],
)
def test_unusable_target_is_refused_naming_why(
    write_api: ApiClient, body: dict[str, object], status: int, message: str
) -> None:
    """Refused URLs, rules, times and unknown watches: 4xx in the error format, nothing added."""
    code, _, text = error_of(write_api.post("/v1/notifications", json=body, headers=AUTH))
    assert code == status and message in text
    assert write_api.get("/v1/notifications", headers=AUTH).json() == {"targets": []}


def test_duplicate_name_is_a_conflict(write_api: ApiClient) -> None:
    """Names are unique: a second target of the same name is a 409."""
    body = {"url": "json://example.org/hook", "name": "desk"}
    assert write_api.post("/v1/notifications", json=body, headers=AUTH).status_code == 201
    code, kind, text = error_of(write_api.post("/v1/notifications", json=body, headers=AUTH))
    assert (code, kind) == (409, "conflict") and "named 'desk' exists already" in text


def test_test_message_and_replay_reach_the_receiver(
    write_api: ApiClient, app: App, fake_api: FakeCtgov, receiver: Receiver
) -> None:
    """POST …/test sends now; a dead notification replayed over HTTP is sent again; /metrics
    counts notifications by status."""
    url = f"json://127.0.0.1:{receiver.port}/hook"
    created = write_api.post("/v1/notifications", json={"url": url}, headers=AUTH).json()
    tested = write_api.post(f"/v1/notifications/{created['id']}/test", headers=AUTH).json()
    assert (tested["ok"], tested["error"]) == (True, None)
    put_real(fake_api, [STUDY])
    sync_ids(app, STUDY)
    sponsor_update(fake_api, STUDY, lambda s: module(s, "statusModule").update(
        overallStatus="COMPLETED"))  # fmt: skip
    sync_ids(app, STUDY)
    receiver.behaviour.status = 503
    retries = {"max_attempts": 2, "retry_base_seconds": 0}
    sender = App(load_settings(None, notifications=retries), app.db)
    dispatcher = sender.notification_dispatcher(sender.notifier(), "test")
    assert asyncio.run(dispatcher.drain()) == 2
    found = write_api.get("/v1/notifications/deliveries?status=dead", headers=AUTH).json()
    (dead,) = found["deliveries"]
    assert (dead["kind"], dead["nct_id"], dead["attempts"]) == ("version", STUDY, 2)
    assert dead["last_error"].startswith("Failed to send JSON POST notification")
    receiver.behaviour.status = 200
    queued = write_api.post(f"/v1/notifications/deliveries/{dead['id']}/replay", headers=AUTH)
    assert (queued.status_code, queued.json()["status"]) == (202, "pending")
    assert asyncio.run(dispatcher.drain()) == 1
    titles = [r.json()["title"] for r in receiver.delivered()]
    assert titles == ["ctmirror: test notification", dead["title"]]
    metrics = write_api.get("/metrics").text
    assert 'ctmirror_notification_deliveries{status="delivered"} 1.0' in metrics
    assert 'ctmirror_notification_targets{state="active"} 1.0' in metrics
    assert "ctmirror_notification_queue_depth 0.0" in metrics

"""/v1/webhooks in-process (httpx.ASGITransport): every route needs the write token; the secret
is in the creation answer only; pings and replays reach a real receiver; webhook metrics."""

from __future__ import annotations

from typing import Any

from api_client import AUTH, ApiClient, error_of
from fake_ctgov import FakeCtgov
from helpers import STUDY, module, put_real, sponsor_update, sync_ids
from receiver import Receiver

from mirror.app import App
from mirror.notify import Links, fan_out


def test_every_webhook_route_needs_the_write_token(write_api: ApiClient) -> None:
    """Listing included: no token or a wrong one is 401 in the error format."""
    for method, path in [("GET", "/v1/webhooks"), ("GET", "/v1/webhooks/deliveries"),
                         ("POST", "/v1/webhooks"), ("DELETE", "/v1/webhooks/1")]:  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = write_api.request(method, path, headers=headers, json={"url": "http://x"})
            assert error_of(response)[:2] == (401, "unauthorized"), (method, path)


def test_created_subscription_shows_its_secret_once(
    write_api: ApiClient, receiver: Receiver
) -> None:
    """POST answers 201 with the secret; GET and the list show only its hint."""
    body = {"url": receiver.url, "fields": ["status.*"], "kinds": ["changed"]}
    created = write_api.post("/v1/webhooks", json=body, headers=AUTH)
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and created.json()["secret_hint"] == "whsec_…" + secret[-4:]
    shown = write_api.get(f"/v1/webhooks/{created.json()['id']}", headers=AUTH).json()
    listed = write_api.get("/v1/webhooks", headers=AUTH).json()["webhooks"]
    assert "secret" not in shown and [w["id"] for w in listed] == [shown["id"]]
    assert (shown["fields"], shown["kinds"], shown["state"]) == (
        ["status.*"],
        ["changed"],
        "active",
    )
    assert secret not in str(listed)


def test_refused_urls_and_bad_filters_are_422(write_api: ApiClient) -> None:
    """Metadata addresses, private ranges, bad kinds and unknown watches say what is wrong."""
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"url": "http://169.254.169.254/"}, 422, "link-local, metadata or reserved"),
        ({"url": "http://192.168.1.10/hook"}, 422, "private address"),
        ({"url": "gopher://example.org/"}, 422, "body field url: String should match pattern"),
        ({"url": "http://[/"}, 422, "not a valid URL"),
        ({"url": "http://example.org/", "kinds": ["moved"]}, 422, "body field kinds"),
        ({"url": "http://example.org/", "watches": ["nope"]}, 404, "no watch named 'nope'"),
        ({"url": "http://example.org/", "fields": ["a[b]"]}, 422, "body field fields.0"),
    ]
    for body, status, words in cases:
        got, _, message = error_of(write_api.post("/v1/webhooks", json=body, headers=AUTH))
        assert got == status and words in message, (body, message)
    assert write_api.get("/v1/webhooks", headers=AUTH).json() == {"webhooks": []}


def test_ping_reaches_the_receiver_signed(write_api: ApiClient, receiver: Receiver) -> None:
    """POST /{id}/test sends a signed webhook.test and reports the receiver's answer."""
    created = write_api.post("/v1/webhooks", json={"url": receiver.url}, headers=AUTH).json()
    answer = write_api.post(f"/v1/webhooks/{created['id']}/test", headers=AUTH).json()
    assert (answer["ok"], answer["status_code"], answer["body"]) == (True, 200, '{"ok": true}')
    (got,) = receiver.delivered()
    assert got.verify(created["secret"]) | {"sent_at": None} == {
        "type": "webhook.test", "id": answer["webhook_id"], "subscription_id": created["id"],
        "sent_at": None, "changes": [],
    }  # fmt: skip


def test_deliveries_listed_replayed_and_counted_in_metrics(
    write_api: ApiClient, app: App, fake_api: FakeCtgov, receiver: Receiver
) -> None:
    """A delivery appears under /deliveries, replays to 202 pending, and /metrics counts it."""
    put_real(fake_api, [STUDY])
    sync_ids(app, STUDY)
    write_api.post("/v1/webhooks", json={"url": receiver.url}, headers=AUTH)
    sponsor_update(fake_api, STUDY, lambda s: module(s, "statusModule").update(overallStatus="X"))
    sync_ids(app, STUDY)
    metrics = write_api.get("/metrics").text
    assert "ctmirror_outbox_backlog 2.0" in metrics  # versions 1 and 2, not fanned out yet
    assert fan_out(app.db, Links.of(app.settings)) == (2, 1)  # v1 is older than the subscription
    (listed,) = write_api.get("/v1/webhooks/deliveries", headers=AUTH).json()["deliveries"]
    assert (listed["nct_id"], listed["version"], listed["status"]) == (STUDY, 2, "pending")
    replayed = write_api.post(f"/v1/webhooks/deliveries/{listed['id']}/replay", headers=AUTH)
    assert (replayed.status_code, replayed.json()["webhook_id"]) == (202, listed["webhook_id"])
    metrics = write_api.get("/metrics").text
    assert 'ctmirror_webhook_deliveries{status="pending"} 1.0' in metrics
    assert "ctmirror_webhook_queue_depth 1.0" in metrics
    assert 'ctmirror_webhook_subscriptions{state="active"} 1.0' in metrics
    missing = write_api.post("/v1/webhooks/deliveries/999/replay", headers=AUTH)
    assert error_of(missing)[:2] == (404, "not_found")


def test_remove_and_resume(write_api: ApiClient, receiver: Receiver) -> None:
    """DELETE answers 204 then 404; resume of an active subscription keeps it active."""
    created = write_api.post("/v1/webhooks", json={"url": receiver.url}, headers=AUTH).json()
    resumed = write_api.post(f"/v1/webhooks/{created['id']}/resume", headers=AUTH)
    assert (resumed.status_code, resumed.json()["state"]) == (200, "active")
    assert write_api.delete(f"/v1/webhooks/{created['id']}", headers=AUTH).status_code == 204
    gone = write_api.delete(f"/v1/webhooks/{created['id']}", headers=AUTH)
    assert error_of(gone)[:2] == (404, "not_found")

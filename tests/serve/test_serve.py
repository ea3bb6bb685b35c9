"""`ctmirror serve` as a real process over loopback: it answers, then stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import httpx
import pytest
from fake_ctgov import FakeCtgov
from helpers import STUDY, free_port, put_real, serve_command, start_serve, sync_ids

from mirror.app import App


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_over_loopback_and_stops_cleanly(
    fake_api: FakeCtgov, env: dict[str, str], app: App, stop: signal.Signals
) -> None:
    """A served mirror answers /v1/changes and a page over TCP, and a stop signal exits 0."""
    put_real(fake_api, [STUDY])
    sync_ids(app, STUDY)
    port = free_port()
    process, base = start_serve(env, port, stdout=subprocess.PIPE)
    try:
        page = httpx.get(f"{base}/v1/changes", params={"nct_id": STUDY, "limit": 3}).json()
        assert [e["nct_id"] for e in page["changes"]] == [STUDY] * 3
        assert page["next_cursor"] == page["changes"][-1]["id"]
        markdown = httpx.get(f"{base}/trials/{STUDY}.md")
        assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
        assert f"nct_id: {STUDY}" in markdown.text
    finally:
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert f"serving on http://127.0.0.1:{port}" in stderr.decode()
    assert stderr.decode().rstrip().endswith("stopped")


def test_serve_on_a_busy_port_is_one_clear_error(env: dict[str, str], app: App) -> None:
    """Another process holds the port: one error line naming it, exit 1, nothing announced."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            serve_command(port),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]

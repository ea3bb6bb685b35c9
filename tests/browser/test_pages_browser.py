"""The pages in a real browser: Playwright driving Debian's Chromium against a real
``ctmirror serve`` over loopback, on a synced and edited mirror, at a desktop and a phone width.

A person opens ``/``, filters it, clicks through to a study, compares two versions, looks at an
old version, the study list, the watches, ``/docs`` and ``/redoc``; the test asserts what they
would see, that the browser console shows no error, and that no request leaves loopback.
Screenshots of every page at both widths go to ``tests/.artifacts/`` for a reviewer.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fake_ctgov import FakeCtgov
from helpers import STUDY, free_port, start_serve
from pages_mirror import OTHER, WATCH, build

from mirror.app import App

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium (apt-get install chromium)"
)


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only: the pages are tested on both backends in-process (tests/serve)."""
    target = tmp_path / "mirror.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def server(fake_api: FakeCtgov, env: dict[str, str], app: App) -> Iterator[str]:
    """``ctmirror serve`` on a free loopback port over the page-test mirror."""
    build(app, fake_api)
    process, base = start_serve(env, free_port())
    try:
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=30)


class LoopbackOnly:
    """A route handler: lets loopback requests through, notes and aborts any other."""

    def __init__(self) -> None:
        self.foreign: list[str] = []

    def __call__(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()


def test_a_person_browses_filters_opens_a_study_and_compares(server: str) -> None:
    """At both widths: every page shows what it should, no console error, nothing off-host."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for name, (width, height) in WIDTHS.items():
                context = browser.new_context(viewport={"width": width, "height": height})
                errors: list[str] = []
                guard = LoopbackOnly()

                context.route("**/*", guard)
                page = context.new_page()
                page.on(
                    "console",
                    lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))

                def shot(what: str, page=page, name=name) -> None:  # type: ignore[no-untyped-def]
                    page.screenshot(path=str(ARTIFACTS / f"{what}-{name}.png"), full_page=True)
                    if what != "docs":  # a phone never scrolls sideways on ctmirror's pages
                        fits = "document.documentElement.scrollWidth <= window.innerWidth"
                        assert page.evaluate(fits), f"{what} is wider than {name}"

                page.goto(server + "/")
                expect(page.get_by_role("heading", name="Changes in the mirror")).to_be_visible()
                expect(page.locator("article.version")).to_have_count(4)
                expect(page.locator(f"#v-{STUDY}-3 ins").first).to_have_text("COMPLETED")
                shot("changes")

                page.fill("input[name=field]", "status.overall*")
                page.get_by_role("button", name="Filter").click()
                expect(page).to_have_url(re.compile(r"/\?.*field=status\.overall\*"))
                expect(page.locator("article.version")).to_have_count(2)

                page.locator(f"#v-{STUDY}-3 header a").first.click()
                expect(page).to_have_url(f"{server}/trials/{STUDY}.html?version=3")
                expect(page.locator("h1")).to_contain_text("LBS-007")
                expect(page.locator(".versionbar li")).to_have_count(3)
                expect(page.locator(".notice.old")).to_have_count(0)
                shot("study")

                page.get_by_role("link", name="compare with the previous version").click()
                expect(page.locator("h1")).to_have_text(f"Compare versions of {STUDY}")
                expect(page.locator("#area-status")).to_contain_text("overallStatus")
                expect(page.locator("#area-status ins", has_text="COMPLETED")).to_have_count(1)
                shot("compare")

                page.get_by_role("link", name="step back").click()
                expect(page.locator(".diff ins").first).to_be_visible()
                page.locator(".versionbar, nav.pager").first.get_by_role(
                    "link", name="version 1"
                ).click()
                expect(page.locator(".notice.old")).to_contain_text("This is an old version")
                shot("study-old")

                page.goto(server + "/trials")
                expect(page.locator("table.list tbody tr")).to_have_count(3)
                page.fill("input[name=q]", "disc")
                page.get_by_role("button", name="Search").click()
                expect(page.locator("table.list tbody tr")).to_have_count(1)
                expect(page.locator("table.list")).to_contain_text('<script>alert("owned")')
                expect(page.locator("table.list")).to_contain_text(OTHER)
                shot("trials")

                page.goto(server + "/watches")
                expect(page.locator(f"#watch-{WATCH}")).to_contain_text("Last run: ok")
                shot("watches")

                page.goto(server + "/docs")
                expect(page.locator(".swagger-ui .info .title")).to_contain_text("ctmirror")
                shot("docs")

                page.goto(server + "/redoc")
                expect(page.locator("h1").first).to_contain_text("ctmirror")

                assert errors == [], f"console errors at {name} width: {errors}"
                assert guard.foreign == [], f"requests off loopback at {name}: {guard.foreign}"
                context.close()
        finally:
            browser.close()

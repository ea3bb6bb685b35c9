"""The pages for people in-process (httpx.ASGITransport) on a real migrated database of each
backend: the change browser, the study list, the study page's version bar and notices,
compare, watches, offline /docs, the Atom feed's charset and folding; hostile registry text
stays text everywhere."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from api_client import ApiClient, api_client
from fake_ctgov import FakeCtgov
from helpers import STUDY
from pages_mirror import CRITERIA_LINE, GONE, HOSTILE, OTHER, WATCH, build

from mirror import feed
from mirror.app import App

ATOM = {"a": "http://www.w3.org/2005/Atom"}


@pytest.fixture
def pages(app: App, fake_api: FakeCtgov) -> Iterator[ApiClient]:
    build(app, fake_api)
    with api_client(app) as client:
        yield client


def html(client: ApiClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:500])
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    body = response.text
    assert "<script" not in body.lower(), f"{url} carries a script (or unescaped markup)"
    return body


def blocks(body: str) -> list[str]:
    """The version blocks of the change browser, as ``NCT…/version``."""
    return [
        f"{n}/{v}" for n, v in re.findall(r'<article class="version" id="v-(NCT\d{8})-(\d+)"', body)
    ]


def test_change_browser_shows_versions_newest_first_without_first_sights(
    pages: ApiClient,
) -> None:
    """`/`: one block per study version, newest first, changed words marked, no first sight."""
    body = html(pages, "/")
    shown = blocks(body)
    assert shown[0] == f"{STUDY}/3"
    assert set(shown) == {f"{STUDY}/3", f"{STUDY}/2", f"{OTHER}/2", f"{GONE}/2"}
    assert "First seen" not in body
    v3 = body.split(f'id="v-{STUDY}-3"')[1].split("</article>")[0]
    assert "<del>ACTIVE_NOT_RECRUITING</del>" in v3 and "<ins>COMPLETED</ins>" in v3
    assert f'href="/trials/{STUDY}/compare?to=3"' in v3
    assert 'href="/v1/changes.atom?initial=false"' in body


def test_change_browser_folds_first_sights_when_asked(pages: ApiClient, app: App) -> None:
    """`initial=any` adds each first sight as one line counting its fields, not field rows."""
    body = html(pages, "/?initial=any")
    assert f"{STUDY}/1" in blocks(body)
    first = body.split(f'id="v-{STUDY}-1"')[1].split("</article>")[0]
    only_first = feed.ChangeFilter(nct_ids=[STUDY], initial=True, limit=1000)
    fields = len(feed.changes(app.db, only_first))
    assert "First seen on" in first and f"{fields} fields." in first
    assert "<table" not in first


def test_a_field_filter_shows_the_first_sight_values_it_asks_for(
    pages: ApiClient, app: App
) -> None:
    """`field=…&initial=any`: a first sight lists its matching fields with their values."""
    body = html(pages, "/?field=status.overallStatus&initial=any")
    first = body.split(f'id="v-{STUDY}-1"')[1].split("</article>")[0]
    only_first = feed.ChangeFilter(nct_ids=[STUDY], initial=True, fields=["status.overallStatus"])
    (event,) = feed.changes(app.db, only_first)
    assert "First seen" not in first
    assert re.findall(r"<code>([^<]+)</code>", first) == ["status.overallStatus"]
    assert f"<ins>{event.new}</ins>" in first or f">{event.new}<" in first


def test_change_browser_filters_like_the_feed(pages: ApiClient) -> None:
    """Field globs, kind, NCT ids and watch narrow the page; a bad value is said on the page."""
    status_only = html(pages, "/?field=status.overall*")
    assert set(blocks(status_only)) == {f"{STUDY}/3", f"{STUDY}/2"}
    assert "enrollmentCount" not in status_only
    assert blocks(html(pages, "/?kind=removed")) == [f"{GONE}/2"]
    assert set(blocks(html(pages, f"/?nct_id={OTHER},{GONE}"))) == {f"{OTHER}/2", f"{GONE}/2"}
    assert GONE not in html(pages, f"/?watch={WATCH}")
    bad = html(pages, "/?since=yesterday", 422)
    assert "since: &#39;yesterday&#39; is not a date" in bad and 'value="yesterday"' in bad
    assert "no watch named" in html(pages, "/?watch=nobody", 404)
    assert "is not a date" in html(pages, "/?since=0001-01-01T00:00:00%2B01:00", 422)


def test_version_pages_cover_the_feed_once(pages: ApiClient, app: App) -> None:
    """Paging by cursor with first sights folded returns every version once, newest first."""
    seen: list[tuple[str, int]] = []
    before = None
    for _ in range(20):
        flt = feed.ChangeFilter(limit=2, newest_first=True, before=before)
        page = feed.version_changes(app.db, flt)
        if not page:
            break
        seen += [(v.nct_id, v.version) for v in page]
        before = page[-1].first_id
    assert len(seen) == len(set(seen)) == 7  # STUDY 3, OTHER 2, GONE 2
    assert sum(1 for v in seen if v[1] == 1) == 3


def test_hostile_registry_text_stays_text(pages: ApiClient) -> None:
    """A title holding markup is shown escaped on every page that names the study."""
    escaped = "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt; &amp; "
    for url in ["/", "/trials", f"/trials/{OTHER}.html", f"/trials/{OTHER}/compare"]:
        body = html(pages, url)
        assert escaped in body, url
        assert HOSTILE not in body and "<b>bold" not in body


def test_study_list_searches_filters_and_counts(pages: ApiClient) -> None:
    """`/trials`: by title words or NCT id, by status and watch; status, last change, versions."""
    body = html(pages, "/trials")
    assert "3 studies" in body
    row = body.split(f'href="/trials/{STUDY}.html"')[1].split("</tr>")[0]
    assert "COMPLETED" in row and ">3</a>" in row
    assert re.search(r"<td>\d{4}-\d\d-\d\d</td>", row)
    assert body.index(STUDY) < body.index(GONE)  # last change first
    assert "1 study" in html(pages, "/trials?q=leukaemias+relapsed")
    assert STUDY in html(pages, "/trials?q=nct0575")
    assert "1 study" in html(pages, "/trials?status=COMPLETED")
    by_watch = html(pages, f"/trials?watch={WATCH}")
    assert "2 studies" in by_watch and GONE not in by_watch.split("<table")[1]
    assert "removed" in html(pages, f"/trials?q={GONE}")
    assert "past the last one" in html(pages, "/trials?page=9")


def test_study_page_has_a_version_bar_and_says_when_it_is_old(pages: ApiClient) -> None:
    """Every version listed with its date and origin; an old one says so and links onwards."""
    latest = html(pages, f"/trials/{STUDY}.html")
    assert len(re.findall(r"<li>.*?v\d · \d{4}-\d\d-\d\d · api", latest)) == 3
    assert "This is an old version" not in latest
    assert f'href="/trials/{STUDY}/compare?from=2&amp;to=3"' in latest
    old = html(pages, f"/trials/{STUDY}.html?version=1")
    assert "This is an old version" in old
    assert f'href="/trials/{STUDY}.html?version=2" rel="next"' in old
    assert f'href="/trials/{STUDY}/compare?from=1&amp;to=3"' in old
    assert "First seen on" in old and "fields" in old
    assert not re.search(r"<td><code>locations\.", old)  # folded, not one row per site


def test_study_page_of_a_removed_study_says_so(pages: ApiClient) -> None:
    """A study that left the registry opens with the notice and the date."""
    body = html(pages, f"/trials/{GONE}.html")
    assert "No longer in the registry" in body
    assert "left" in body.split('class="versionbar"')[1]


def test_compare_shows_only_differing_fields_grouped_with_highlights(pages: ApiClient) -> None:
    """Defaults to the last two versions; long texts as an inline diff; swap and step links."""
    latest = html(pages, f"/trials/{STUDY}/compare")
    assert 'id="area-status"' in latest and "overallStatus" in latest
    assert "enrollmentCount" not in latest  # unchanged between 2 and 3
    assert f'href="/trials/{STUDY}/compare?from=3&amp;to=2"' in latest  # swap
    assert f'href="/trials/{STUDY}/compare?from=1&amp;to=2"' in latest  # step back
    first = html(pages, f"/trials/{STUDY}/compare?from=1&to=2")
    assert 'id="area-eligibility"' in first and 'id="area-design"' in first
    inline = first.split('class="diff"')[1].split("</div>")[0]
    assert "<del>greater</del>" in inline and "<ins>at</ins>" in inline
    assert re.search(r"<ins>[^<]*" + re.escape(CRITERIA_LINE[2:]) + "</ins>", inline)
    missing = html(pages, f"/trials/{STUDY}/compare?from=1&to=9", 422)
    assert "has no version 9" in missing
    assert html(pages, "/trials/NCT00000001/compare", 404)


def test_watches_page_shows_kind_schedule_last_run_and_changes(pages: ApiClient) -> None:
    """`/watches`: the watch, its studies, its last run's counts, its recent changes."""
    body = html(pages, "/watches")
    section = body.split(f'id="watch-{WATCH}"')[1]
    assert f"{STUDY}, {OTHER}" in section and "ids" in section
    assert re.search(r"Last run:</strong> ok, started \d{4}-\d\d-\d\d \d\d:\d\d UTC", section)
    assert "changed 1" in section
    assert f'href="/trials/{STUDY}.html?version=3"' in section


def test_docs_and_redoc_load_only_local_assets(pages: ApiClient) -> None:
    """Swagger UI and ReDoc pages reference assets this server serves, and it serves them."""
    for url in ["/docs", "/redoc"]:
        page = pages.get(url).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page)
        assert assets and all(a.startswith("/static/") for a in assets), (url, assets)
        assert "cdn" not in page and "fonts.googleapis" not in page
        for asset in assets:
            response = pages.get(asset)
            assert response.status_code == 200 and len(response.content) > 10_000
            assert b"cdn.redoc.ly" not in response.content
    css = pages.get("/static/ctmirror.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8" and b"nav.site" in css.content


def test_atom_has_a_charset_folds_first_sights_and_links_compare(pages: ApiClient) -> None:
    """The Atom answer names utf-8; a first sight is one entry; entries link the compare page."""
    response = pages.get("/v1/changes.atom")
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    root = ET.fromstring(response.content)
    titles = [e.findtext("a:title", namespaces=ATOM) or "" for e in root.findall("a:entry", ATOM)]
    assert len(titles) == 7
    assert sum(1 for t in titles if re.search(r": first version, \d+ fields$", t)) == 3
    found = root.findall("a:entry", ATOM)
    contents = [e.findtext("a:content", namespaces=ATOM) or "" for e in found]
    assert any(f"/trials/{STUDY}/compare?to=3" in c for c in contents)
    assert "→" in response.content.decode("utf-8")

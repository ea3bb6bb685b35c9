"""Rules, digest times and message text: pure functions, no database.

Rules are also read by generation: any text is either a rule (whose own text reads back as
the same rule) or a RuleError, never another exception.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.errors import UsageError
from mirror.notify import (
    DigestSchedule,
    RuleError,
    VersionSummary,
    digest_message,
    parse_rule,
    version_message,
)
from mirror.notify.messages import DIGEST_STUDIES_MAX, DIGEST_VERSIONS_MAX, Period
from mirror.record import CATALOG, class_matches
from mirror.store import DigestPeriod

ENROLLMENT = {"name": "enrollment.changed", "from": 100, "to": 125, "percent": 25.0,
              "major": True, "type": "ESTIMATED"}  # fmt: skip
CUT = ENROLLMENT | {"to": 85, "percent": -15.0, "major": False}
SLIP = {"name": "dates.slipped", "date": "primary_completion", "from": "2025-12-15",
        "to": "2026-06", "shift_days": 168, "major": True}  # fmt: skip
SITES = {"name": "sites.added", "count": 2, "countries": ["France", "Japan"]}
STOPPED = {"name": "status.stopped", "from": "RECRUITING", "to": "SUSPENDED", "why_stopped": None}


@pytest.mark.parametrize(
    ("rule", "classes", "matches"),
    [
        ("enrollment.* |percent| >= 20%", [ENROLLMENT], True),
        ("enrollment.* |percent| >= 20%", [CUT], False),
        ("enrollment.changed percent <= -10", [CUT], True),
        ("dates.slipped shift_days >= 30 days", [SLIP], True),
        ("dates.slipped shift_days >= 200d", [SLIP], False),
        ("dates.slipped date = primary_completion and shift_days >= 30", [SLIP], True),
        ("dates.slipped date = start and shift_days >= 30", [SLIP], False),
        ("dates.slipped to >= 2026-01", [SLIP], True),
        ("major", [CUT, SITES], False),
        ("major", [CUT, SLIP], True),
        ("status.stopped", [STOPPED], True),
        ("status.stop*", [SLIP], False),
        ("status.stopped to = suspended", [STOPPED], True),
        ("status.stopped why_stopped = null", [STOPPED], True),
        ("sites.added countries = japan", [SITES], True),
        ("sites.added countries != Japan", [SITES], False),
        ("sites.added count > 1", [SITES], True),
        ("enrollment.* major and |percent| >= 20", [CUT, ENROLLMENT], True),
    ],
)
def test_rule_matches_the_classes_it_describes(
    rule: str, classes: list[dict[str, Any]], matches: bool
) -> None:
    """A rule matches when one class fits the glob and all its conditions."""
    assert parse_rule(rule).matches(classes) is matches


def test_conditions_hold_within_one_class() -> None:
    """Conditions are checked on the same class, not spread over the version's classes."""
    other = {"name": "dates.slipped", "date": "start", "shift_days": 5, "major": False}
    rule = parse_rule("dates.slipped date = start and shift_days >= 30")
    assert rule.matches([SLIP, other]) is False


def test_rule_error_is_a_usage_error_naming_the_rule() -> None:
    """RuleError is exit 2 / HTTP 422 with the rule quoted and the docs named."""
    with pytest.raises(RuleError) as raised:
        parse_rule("enrollment.changed shift_days > 3")
    assert isinstance(raised.value, UsageError) and raised.value.http_status == 422
    assert raised.value.message == (
        "rule 'enrollment.changed shift_days > 3': enrollment.changed has no parameter "
        "'shift_days' (it has: from, major, percent, to, type) "
        "(see docs/notifications.md, 'Rules')"
    )


NAMES = st.sampled_from([info.name for info in CATALOG] + ["dates.*", "outcomes.*.added", "*"])
VALUES = st.one_of(
    st.integers(-10_000, 10_000),
    st.floats(-1000, 1000, allow_nan=False).map(lambda f: round(f, 2)),
    st.sampled_from(["true", "false", "null", "RECRUITING", "2026-06", '"two words"']),
)


@st.composite
def rules(draw: st.DrawFn) -> str:
    """Rule texts built from the catalog's names and parameters."""
    name = draw(NAMES)
    params = sorted({p for info in CATALOG if class_matches(name, info.name) for p in info.params})
    conditions = []
    for _ in range(draw(st.integers(0, 3))):
        param = draw(st.sampled_from(params))
        op = draw(st.sampled_from([">=", "<=", ">", "<", "=", "!="]))
        value = draw(VALUES)
        conditions.append(f"{param} {op} {value}" if param != "major" else "major")
    return " and ".join([name, *conditions]).replace(" and ", " ", 1)


@settings(max_examples=300, deadline=None)
@given(rules())
def test_rule_text_reads_back_as_the_same_rule(text: str) -> None:
    """A rule that parses prints as text that parses to the same rule."""
    try:
        rule = parse_rule(text)
    except RuleError:
        return  # e.g. a parameter the glob's classes lack, or ">=" with a word
    assert parse_rule(str(rule)) == rule


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_a_rule_or_a_rule_error(text: str) -> None:
    """Arbitrary input never fails with anything but a RuleError."""
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        assert exc.message.startswith("rule ")
    else:
        assert rule.matches([ENROLLMENT, SLIP, SITES, STOPPED]) in (True, False)


# -- digest times ---------------------------------------------------------------------------


def test_daily_digest_time_is_local_and_keeps_across_daylight_saving() -> None:
    """08:00 Europe/Paris is 06:00 UTC in summer and 07:00 UTC after the clocks go back."""
    schedule = DigestSchedule.parse("daily", "08:00", "Europe/Paris")
    saturday = datetime(2026, 10, 24, 6, 30, tzinfo=UTC)  # 08:30 in Paris, summer time
    sunday = schedule.next_after(saturday)
    assert sunday == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)  # winter time from 03:00 that day
    assert schedule.next_after(datetime(2026, 10, 24, 5, 59, tzinfo=UTC)) == datetime(
        2026, 10, 24, 6, 0, tzinfo=UTC
    )


def test_weekly_digest_is_on_its_day() -> None:
    """'fri 18:30' weekly: the next Friday at 18:30 (UTC), a week later once it passed."""
    schedule = DigestSchedule.parse("weekly", "fri 18:30", "UTC")
    assert (schedule.period, schedule.weekday, schedule.at_text()) == (
        DigestPeriod.WEEKLY, 4, "fri 18:30",
    )  # fmt: skip
    friday = datetime(2026, 12, 4, 18, 30, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 12, 1, tzinfo=UTC)) == friday
    assert schedule.next_after(friday) == datetime(2026, 12, 11, 18, 30, tzinfo=UTC)
    assert DigestSchedule.parse("weekly", None, "UTC").at_text() == "mon 08:00"


@pytest.mark.parametrize(
    ("digest", "at", "message"),
    [
        ("hourly", None, "--digest 'hourly': use off, daily or weekly"),
        ("off", "08:00", "--at needs --digest daily or --digest weekly"),
        ("daily", "25:00", "--at '25:00': give a time as HH:MM"),
        ("daily", "mon 08:00", "--at 'mon 08:00': give a time as HH:MM"),
        ("weekly", "someday 08:00", "--at 'someday 08:00': give a time as HH:MM"),
    ],
)
def test_bad_digest_schedule_is_a_usage_error(digest: str, at: str | None, message: str) -> None:
    """Periods, times and days that cannot be read are refused with what to give instead."""
    with pytest.raises(UsageError) as raised:
        DigestSchedule.parse(digest, at, "UTC")
    assert raised.value.message.startswith(message)


# -- message text ---------------------------------------------------------------------------


def summary(nct_id: str = "NCT03039062", version: int = 3, **changes: str) -> VersionSummary:
    lines = tuple(changes.items()) or (("status.overallStatus", "changed: A → B"),)
    return VersionSummary(nct_id, version, "A <b>bold</b> *study*", "2026-06-01T07:00:35Z",
                          "status A → B", ("status A → B",), lines)  # fmt: skip


def test_markdown_shows_record_text_as_typed_and_never_as_html() -> None:
    """Registry text is escaped for Markdown: no tags reach a service that renders HTML."""
    message = version_message(summary(), "https://mirror.example/")
    assert message.markdown.splitlines()[0] == r"**A &lt;b>bold&lt;/b> \*study\***"
    assert message.text.splitlines()[0] == "A <b>bold</b> *study*"
    assert "Study page: <https://mirror.example/trials/NCT03039062.html>" in message.markdown
    assert message.title == "NCT03039062: status A → B"


def test_digest_lists_the_first_studies_and_links_the_rest() -> None:
    """Past DIGEST_STUDIES_MAX studies a digest counts the rest and links the change browser."""
    many = [summary(f"NCT{n:08d}", 2) for n in range(DIGEST_STUDIES_MAX + 3)]
    start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 8, tzinfo=UTC)
    message = digest_message(many, Period("weekly", start, end, ZoneInfo("UTC")),
                             "https://mirror.example")  # fmt: skip
    assert message.title == "ctmirror weekly digest: 53 studies changed (53 versions)"
    assert message.text.count("\nVersion 2 (2026-06-01): status A → B") == DIGEST_STUDIES_MAX
    assert message.text.endswith(
        "… and 3 more studies: https://mirror.example/?since=2026-06-01T00%3A00%3A00%2B00%3A00"
    )


def test_digest_lists_a_studys_first_versions_and_counts_the_later_ones() -> None:
    """A study with more versions than DIGEST_VERSIONS_MAX: the first listed, the rest counted,
    the compare link spanning them all."""
    versions = [summary("NCT03039062", v) for v in range(2, 2 + DIGEST_VERSIONS_MAX + 2)]
    start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)
    message = digest_message(versions, Period("daily", start, end, ZoneInfo("UTC")), "http://m")
    assert message.text.count("\nVersion ") == DIGEST_VERSIONS_MAX
    assert "\n… and 2 later versions\n" in message.text
    assert message.text.endswith(
        f"Compare versions 1 and {1 + DIGEST_VERSIONS_MAX + 2}: "
        f"http://m/trials/NCT03039062/compare?from=1&to={1 + DIGEST_VERSIONS_MAX + 2}"
    )

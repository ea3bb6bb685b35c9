"""The CLI's reading commands, formats and bad input, on a database filled through the fake API."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from conftest import Cli
from fake_ctgov import FakeCtgov, load_study
from sqlalchemy import func, select

from mirror.cli import cli
from mirror.store import Database, StudyVersion

IDS = ["NCT00000410", "NCT00007696", "NCT00033839"]
SEED_000 = next((Path(__file__).resolve().parents[3] / "shared" / "seeds").glob("000_*.txt"))
EVENT_KEYS = {
    "id", "nct_id", "version", "field", "kind", "old", "new", "observed_at", "source_date",
    "initial",
}  # fmt: skip


@pytest.fixture
def synced(fake_api: FakeCtgov, run: Cli) -> Cli:
    """Three real studies synced once, then one of them edited and synced again."""
    for nct_id in IDS:
        fake_api.put(load_study(nct_id))
    run("sync", *IDS)
    fake_api.edit(IDS[0], lambda s: s["protocolSection"]["statusModule"].update(
        overallStatus="TERMINATED", whyStopped="Funding ended"))  # fmt: skip
    run("sync", *IDS)
    return run


def _versions(db_url: str) -> int:
    db = Database(db_url)
    with db.session() as session:
        count = session.scalar(select(func.count()).select_from(StudyVersion)) or 0
    db.dispose()
    return count


def test_changes_json_objects_are_the_design_event(synced: Cli) -> None:
    """`changes --format json` prints events with exactly the keys of the documented event."""
    events = orjson.loads(synced("changes", "--no-initial", "--format", "json").stdout)
    assert [(e["field"], e["kind"], e["old"], e["new"]) for e in events] == [
        ("status.overallStatus", "changed", "COMPLETED", "TERMINATED"),
        ("status.whyStopped", "added", None, "Funding ended"),
    ]
    assert all(set(e) == EVENT_KEYS for e in events)
    assert {e["version"] for e in events} == {2}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", events[0]["observed_at"])


def test_changes_filters_by_field_glob_and_study(synced: Cli) -> None:
    """--field globs and --nct narrow the feed; --after continues from a cursor."""
    status = orjson.loads(
        synced("changes", "--field", "status.overall*", "--format", "json").stdout
    )
    assert {(e["nct_id"], e["version"]) for e in status} == {
        (IDS[0], 1), (IDS[1], 1), (IDS[2], 1), (IDS[0], 2),
    }  # fmt: skip
    one = orjson.loads(
        synced("changes", "--nct", IDS[1], "--format", "json", "--limit", "5").stdout
    )
    assert len(one) == 5 and {e["nct_id"] for e in one} == {IDS[1]}
    rest = orjson.loads(
        synced("changes", "--nct", IDS[1], "--after", str(one[-1]["id"]), "--format", "json").stdout
    )
    assert rest and rest[0]["id"] > one[-1]["id"] and {e["nct_id"] for e in rest} == {IDS[1]}


def test_changes_ndjson_and_csv_carry_the_same_events(synced: Cli) -> None:
    """NDJSON lines and CSV rows list the same event ids as JSON."""
    args = ("changes", "--no-initial", "--format")
    as_json = [e["id"] for e in orjson.loads(synced(*args, "json").stdout)]
    as_ndjson = [orjson.loads(line)["id"] for line in synced(*args, "ndjson").stdout.splitlines()]
    as_csv = [int(r["id"]) for r in csv.DictReader(io.StringIO(synced(*args, "csv").stdout))]
    assert as_json == as_ndjson == as_csv and len(as_json) == 2


def test_history_lists_versions_with_their_fields(synced: Cli) -> None:
    """`history` shows version 1 (first sight) and version 2 with the fields it changed."""
    rows = orjson.loads(synced("history", IDS[0], "--format", "json").stdout)
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[1]["fields"] == ["status.overallStatus", "status.whyStopped"]
    assert rows[0]["events"] > 20


def test_diff_between_versions(synced: Cli) -> None:
    """`diff NCT 1 2` computes the field changes between two stored versions."""
    rows = orjson.loads(synced("diff", IDS[0], "1", "2", "--format", "json").stdout)
    assert [(r["field"], r["kind"]) for r in rows] == [
        ("status.overallStatus", "changed"),
        ("status.whyStopped", "added"),
    ]


def test_show_md_follows_the_seed_layout(synced: Cli) -> None:
    """The page has the seed's front matter keys and section headings, in the seed's order."""
    page = synced("show", IDS[0]).stdout
    seed = SEED_000.read_text()

    def front_keys(text: str) -> list[str]:
        block = text.split("---\n")[1]
        return [line.split(":", 1)[0] for line in block.splitlines()]

    def headings(text: str) -> list[str]:
        return [re.sub(r"\(\d+\)", "(N)", h) for h in re.findall(r"^##? .*$", text, re.M)]

    assert front_keys(page) == front_keys(seed)
    seed_sections = [h for h in headings(seed) if not h.startswith("# ")]
    page_sections = [h for h in headings(page) if not h.startswith("# ")]
    assert [h for h in page_sections if h in seed_sections] == seed_sections
    assert "- `status.overallStatus` — changed: COMPLETED → TERMINATED _(" in page
    assert page.rstrip().endswith("no editorial enrichment.*")


def test_show_past_version_and_json(synced: Cli) -> None:
    """--version renders an older version; --format json gives the canonical record."""
    old_page = synced("show", IDS[0], "--version", "1").stdout
    assert "overall_status: COMPLETED" in old_page
    record = orjson.loads(synced("show", IDS[0], "--format", "json").stdout)
    assert record["version"] == 2
    assert record["record"]["status.whyStopped"] == "Funding ended"


def test_fields_lists_the_fixed_paths(run: Cli) -> None:
    """`fields` prints every canonical path, the fixed ones included."""
    rows = orjson.loads(run("fields", "--format", "json").stdout)
    paths = {r["path"] for r in rows}
    fixed = {
        "status.overallStatus", "status.startDate", "status.startDateType",
        "design.enrollmentCount", "eligibility.criteria", "outcomes.primary",
        "armsInterventions.arms", "sponsor.lead", "results.hasResults",
    }  # fmt: skip
    assert fixed <= paths
    assert any(p.startswith("locations.") for p in paths)


@pytest.mark.parametrize(
    "args",
    [
        ("sync", "NCT123"),
        ("sync", "NCT03039062", "--all"),
        ("sync",),
        ("changes", "--limit", "-1"),
        ("changes", "--field", "status.[ab]"),
        ("show", "03039062"),
        ("watch", "add", "bad name", "NCT03039062"),
        ("watch", "add", "w", "NCT03039062", "--schedule", "sometimes"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(
    run: Cli, db_url: str, args: tuple[str, ...]
) -> None:
    """Malformed ids, conflicting options and bad values exit 2 with a message; no data."""
    result = run(*args, expect=2)
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert _versions(db_url) == 0


def test_unknown_study_exits_1(run: Cli) -> None:
    """Asking for a study the mirror does not hold is a run-time error naming it."""
    result = run("show", "NCT09999999", expect=1)
    assert "NCT09999999 is not in this mirror" in result.stderr


def test_missing_version_exits_1(synced: Cli) -> None:
    """diff with a version that does not exist says which versions there are."""
    result = synced("diff", IDS[0], "1", "7", expect=1)
    assert "has no version 7 (it has 1..2)" in result.stderr


def test_watch_add_list_remove(run: Cli) -> None:
    """Watches are added, listed with their definition, and removed."""
    run("watch", "add", "lungs", "--query", "query.cond=lung cancer", "--schedule", "every 12h")
    run("watch", "add", "mine", "NCT00000410", "nct00007696")
    listed = orjson.loads(run("watch", "list", "--format", "json").stdout)
    assert [(w["name"], w["kind"], w["schedule"]) for w in listed] == [
        ("lungs", "query", "every 12h"),
        ("mine", "ids", None),
    ]
    assert listed[0]["query"] == {"query.cond": "lung cancer"}
    assert listed[1]["nct_ids"] == ["NCT00000410", "NCT00007696"]
    assert "already exists" in run("watch", "add", "mine", "NCT00000410", expect=2).stderr
    run("watch", "remove", "mine")
    assert [w["name"] for w in orjson.loads(run("watch", "list", "--format", "json").stdout)] == [
        "lungs"
    ]
    assert "no watch named 'mine'" in run("watch", "remove", "mine", expect=1).stderr


def test_db_check_passes_on_a_migrated_database(run: Cli) -> None:
    """`db check` confirms the migrated schema matches the models."""
    run("db", "upgrade")
    assert "schema matches the models" in run("db", "check").stdout


READ_COMMANDS = [
    ["changes"],
    ["show", "NCT03039062"],
    ["history", "NCT03039062"],
    ["diff", "NCT03039062", "1", "2"],
    ["timeline", "NCT03039062"],
    ["watch", "list"],
    ["webhooks", "list"],
    ["webhooks", "deliveries"],
    ["db", "stats"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_never_create_a_database(tmp_path: Path, args: list[str]) -> None:
    """Where there is no mirror, a read command says which file it looked for and makes none."""
    missing = tmp_path / "nothing-here.db"
    result = CliRunner().invoke(cli, args, env={"CTMIRROR_DATABASE__URL": f"sqlite:///{missing}"})
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: no mirror at sqlite:///{missing}: {missing} does not exist (a sync or import"
    )
    assert list(tmp_path.iterdir()) == []


def test_read_commands_say_when_the_mirror_holds_no_study(run: Cli) -> None:
    """On a migrated but empty mirror, a listing is empty and a note names the database."""
    run("db", "upgrade")
    result = run("changes", "--format", "json")
    assert orjson.loads(result.stdout) == []
    url = run.env["CTMIRROR_DATABASE__URL"]
    shown = url.split("@")[-1] if "postgresql" in url else url
    assert "note: the mirror at " in result.stderr and shown in result.stderr

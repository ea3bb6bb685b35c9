"""Settings: the shipped file, environment overrides, and clear errors for bad settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror.cli import cli
from mirror.config import dump_defaults, load_settings
from mirror.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_file_lists_every_setting_with_its_default() -> None:
    """config/ctmirror.toml holds the defaults; unset-by-default ones appear commented out."""
    path = REPO / "config" / "ctmirror.toml"
    with path.open("rb") as fh:
        shipped = tomllib.load(fh)
    defaults = dump_defaults()
    assert shipped == {
        section: {k: v for k, v in values.items() if v is not None}
        for section, values in defaults.items()
    }
    unset = [k for values in defaults.values() for k, v in values.items() if v is None]
    text = path.read_text()
    assert [k for k in unset if f"\n# {k} = " not in text] == []


def test_every_setting_in_the_shipped_file_has_a_comment() -> None:
    """Each key line of the shipped file is preceded by a comment line."""
    lines = (REPO / "config" / "ctmirror.toml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if line and line[0].isalpha() and " = " in line]
    uncommented = [lines[i] for i in keys if not lines[i - 1].startswith("#")]
    assert uncommented == []


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CTMIRROR_<SECTION>__<KEY> beats the file's value."""
    file = tmp_path / "c.toml"
    file.write_text('[source]\nrequests_per_minute = 10\nbase_url = "http://a"\n')
    monkeypatch.setenv("CTMIRROR_SOURCE__REQUESTS_PER_MINUTE", "12")
    settings = load_settings(file)
    assert (settings.source.requests_per_minute, settings.source.base_url) == (12, "http://a")


def test_list_settings_come_from_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list setting can be overridden with a JSON array."""
    monkeypatch.setenv("CTMIRROR_DIFF__IGNORE", '["derived.*", "status.statusVerifiedDate"]')
    assert load_settings().diff.ignore == ("derived.*", "status.statusVerifiedDate")


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    """An unknown key in a known section is reported with its full name."""
    file = tmp_path / "c.toml"
    file.write_text("[source]\nrequests_per_minit = 10\n")
    with pytest.raises(ConfigError) as err:
        load_settings(file)
    assert err.value.problems == ["source.requests_per_minit: unknown setting"]


def test_unknown_section_in_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CTMIRROR_ variable for a section that does not exist is an error, not ignored."""
    monkeypatch.setenv("CTMIRROR_SOURSE__BASE_URL", "http://x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.problems == [
        "CTMIRROR_SOURSE__BASE_URL: unknown setting (there is no [sourse] section)"
    ]


def test_wrong_type_is_named_with_the_value(tmp_path: Path) -> None:
    """A value of the wrong type names the key and the offending value."""
    file = tmp_path / "c.toml"
    file.write_text('[source]\nconcurrency = "many"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(file)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("source.concurrency: ")
    assert "'many'" in err.value.problems[0]


def test_out_of_range_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page size over the API's 1000 is refused at start-up, naming where it was set."""
    monkeypatch.setenv("CTMIRROR_SOURCE__PAGE_SIZE", "5000")
    with pytest.raises(ConfigError) as err:
        load_settings()
    (problem,) = err.value.problems
    assert problem.startswith("source.page_size (CTMIRROR_SOURCE__PAGE_SIZE): ")
    assert "'5000'" in problem


def test_environment_names_are_read_case_blind_and_an_unknown_key_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As pydantic-settings read them: any case; an unknown key names its variable."""
    monkeypatch.setenv("ctmirror_source__concurrency", "3")
    assert load_settings().source.concurrency == 3
    monkeypatch.setenv("CTMIRROR_SOURCE__CONCURENCY", "3")
    monkeypatch.setenv("CTMIRROR_SOURCE", "x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.problems == [
        "CTMIRROR_SOURCE: unknown setting (expected CTMIRROR_SOURCE__<KEY>)",
        "CTMIRROR_SOURCE__CONCURENCY: unknown setting",
    ]


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    """--config naming a file that does not exist says so."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_cli_bad_setting_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """A bad setting stops the CLI with exit code 2 before any database is created."""
    db = tmp_path / "m.db"
    env = {"CTMIRROR_DATABASE__URL": f"sqlite:///{db}", "CTMIRROR_SOURCE__TIMEOUT_SECONDS": "-1"}
    result = CliRunner().invoke(cli, ["sync", "NCT03039062"], env=env)
    assert result.exit_code == 2
    assert "source.timeout_seconds" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("CTMIRROR_DIFF__IGNORE", "notjson"), ("CTMIRROR_PAGES__RECENT_FIELDS", "[1")],
)
def test_a_list_setting_that_is_not_json_is_named_without_a_traceback(
    tmp_path: Path, name: str, value: str
) -> None:
    """A list setting from the environment that is not JSON: its variable named, exit 2."""
    db = tmp_path / "m.db"
    env = {"CTMIRROR_DATABASE__URL": f"sqlite:///{db}", name: value}
    result = CliRunner().invoke(cli, ["watch", "list"], env=env)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"  - {name}: expected a JSON list such as '[\"derived.*\"]' (got {value!r})" in (
        result.stderr.splitlines()
    )
    assert "Traceback" not in result.stderr
    assert not db.exists()

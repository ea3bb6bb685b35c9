"""Settings: one TOML file plus ``CTMIRROR_<SECTION>__<KEY>`` environment overrides.

The file is ``--config PATH``, else ``$CTMIRROR_CONFIG``, else ``./config/ctmirror.toml``
when it exists, else the defaults below (``config/ctmirror.toml`` documents every one).
Anything unknown or mistyped is a :class:`ConfigError` at start-up, naming the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mirror.errors import ConfigError

ENV_PREFIX = "CTMIRROR_"
# Variables with our prefix that are not settings.
_NOT_SETTINGS = ("CTMIRROR_CONFIG", "CTMIRROR_TEST_", "CTMIRROR_CTGOV_DATA")
DEFAULT_CONFIG_FILE = Path("config/ctmirror.toml")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(Section):
    url: str = "sqlite:///ctmirror.db"
    echo: bool = False
    # Drop the raw JSON of superseded versions older than this many days (canonical records
    # and events stay); unset = keep every raw JSON forever.
    raw_retention_days: int | None = Field(None, ge=1)


class SourceSettings(Section):
    base_url: HttpUrl = "https://clinicaltrials.gov/api/v2"
    # The registry's record history (/studies/{id}?history=true, /studies/{id}/history/{v}).
    history_base_url: HttpUrl = "https://clinicaltrials.gov/api/int"
    requests_per_minute: float = Field(30, gt=0)
    concurrency: int = Field(2, ge=1, le=32)
    timeout_seconds: float = Field(30, gt=0)
    max_retries: int = Field(5, ge=0)
    retry_base_seconds: float = Field(2, ge=0)
    retry_max_seconds: float = Field(120, ge=0)
    ids_per_request: int = Field(100, ge=1, le=1000)
    page_size: int = Field(1000, ge=1, le=1000)
    user_agent: str = "ctmirror/0.1 (+https://github.com/ctmirror/ctmirror)"


class DiffSettings(Section):
    ignore: tuple[str, ...] = ("derived.*",)


class SyncSettings(Section):
    batch_size: int = Field(200, ge=1, le=5000)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class PagesSettings(Section):
    # Where this mirror publishes its pages: canonical_url = <base>/<NCT id>.md
    canonical_base_url: str = "http://127.0.0.1:8000/trials"
    recent_days: int = Field(30, ge=0)
    footer_note: str = "This page is a raw mirror with no AI summary and no editorial enrichment."
    # The seed page's set, in its order, plus every site.
    recent_fields: tuple[str, ...] = (
        "status.overallStatus",
        "status.primaryCompletionDate",
        "status.completionDate",
        "status.lastUpdatePostDate",
        "design.enrollmentCount",
        "eligibility.criteria",
        "eligibility.minAge",
        "eligibility.maxAge",
        "eligibility.sex",
        "outcomes.primary",
        "outcomes.secondary",
        "armsInterventions.arms",
        "sponsor.lead",
        "results.hasResults",
        "locations.*",
    )


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Bearer token every write (POST/DELETE) must carry; unset = writes are refused.
    token: str | None = None
    # Bearer token reads must carry; unset = reads are open.
    read_token: str | None = None


class WebhookSettings(Section):
    # Deliveries in flight at once, per daemon.
    concurrency: int = Field(16, ge=1, le=256)
    # Seconds one delivery attempt may take (connect + send + response) before it counts as failed.
    timeout_seconds: float = Field(10, gt=0, le=60)
    # First retry delay; attempt n waits base * 2**(n-1), plus up to 25% jitter.
    retry_base_seconds: float = Field(40, ge=0)
    # Attempts before a delivery is dead (12 with base 40 s span about a day).
    max_attempts: int = Field(12, ge=1, le=100)
    # A subscription is paused after this many dead deliveries in a row.
    pause_after_dead: int = Field(5, ge=1)
    # Deliver to private addresses (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10).
    allow_private: bool = False
    # Deliver to loopback addresses (127/8, ::1): receivers on this machine.
    allow_loopback: bool = True
    # Bytes of a receiver's response body kept (the rest is not read).
    max_response_bytes: int = Field(4096, ge=0, le=1_048_576)
    # Seconds between the dispatcher's checks for new versions and due retries.
    poll_seconds: float = Field(1.0, gt=0, le=300)
    # Base URL of this mirror's HTTP API, for each payload's links.api.
    api_base_url: str = "http://127.0.0.1:8000/v1"


class NotificationSettings(Section):
    # Where people open this mirror's pages: messages link {base_url}/trials/<NCT id>.html and
    # {base_url}/trials/<NCT id>/compare?from=A&to=B.
    base_url: HttpUrl = "http://127.0.0.1:8000"
    # Digest times (`notify add --at HH:MM`) are read in this time zone (an IANA name).
    timezone: str = Field("UTC", min_length=1)
    # Notifications being sent at once, per daemon.
    concurrency: int = Field(4, ge=1, le=64)
    # Seconds one attempt may take (connect, log in, send) before it counts as failed.
    timeout_seconds: float = Field(30, gt=0, le=300)
    # First retry delay; attempt n waits base * 2**(n-1), plus up to 25% jitter.
    retry_base_seconds: float = Field(60, ge=0)
    # Attempts before a notification is dead (10 with base 60 s span about 17 hours).
    max_attempts: int = Field(10, ge=1, le=100)
    # A target is paused after this many dead notifications in a row.
    pause_after_dead: int = Field(5, ge=1)
    # Notify services at private addresses (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10).
    allow_private: bool = False
    # Notify services at loopback addresses (127/8, ::1), e.g. a mail relay on this machine.
    allow_loopback: bool = True
    # Seconds between the dispatcher's checks for new versions, due retries and due digests.
    poll_seconds: float = Field(1.0, gt=0, le=300)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a known time zone (e.g. UTC, Europe/Paris)") from None
        return value


class DaemonSettings(Section):
    # A watch without a schedule runs daily this many minutes after the registry's refresh
    # (the time of day of GET /version dataTimestamp, read as UTC).
    refresh_delay_minutes: int = Field(30, ge=0, le=1440)
    # Random delay added to every scheduled run, in seconds (spreads load).
    jitter_seconds: int = Field(300, ge=0)
    # A watch's run is a full re-check instead of an incremental pass when its last full one
    # is older than this many days.
    full_recheck_days: float = Field(7, gt=0)
    # Sync jobs one daemon runs at once.
    workers: int = Field(1, ge=1, le=16)
    # A claimed sync job stays with its daemon this long without a heartbeat (crash recovery).
    lease_seconds: int = Field(120, ge=10)
    # A full run of a watch covering more studies than this is queued in parts of about this
    # many, which every daemon sharing the database (on any host) claims and runs separately.
    part_size: int = Field(10_000, ge=1)
    # How often a standby daemon tries to become the scheduler, and the scheduler re-reads
    # the watches, in seconds.
    check_seconds: float = Field(15, gt=0)
    # After each full run of a watch, audit it against the registry (docs/audit.md).
    audit_after_full_run: bool = True


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: DatabaseSettings = DatabaseSettings()
    source: SourceSettings = SourceSettings()
    diff: DiffSettings = DiffSettings()
    sync: SyncSettings = SyncSettings()
    log: LogSettings = LogSettings()
    pages: PagesSettings = PagesSettings()
    api: ApiSettings = ApiSettings()
    webhooks: WebhookSettings = WebhookSettings()
    daemon: DaemonSettings = DaemonSettings()
    notifications: NotificationSettings = NotificationSettings()


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The settings file to read, or None for the built-in defaults."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("CTMIRROR_CONFIG"):
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read and validate every setting; raise ConfigError naming each bad key.

    The environment beats ``overrides``, which beat the file.
    """
    file = config_path(path)
    origin = str(file) if file else "defaults"
    data = _read_toml(file) if file else {}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    from_env, problems = _environment()
    for section, values in from_env.items():
        if isinstance(data.setdefault(section, {}), dict):
            data[section].update(values)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems += [_describe(err, from_env) for err in exc.errors()]
    if problems:
        raise ConfigError(problems, origin + " + environment")
    return settings


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"settings file {file} does not exist"], str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(file)) from None


def _environment() -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The ``CTMIRROR_<SECTION>__<KEY>`` variables by section, and what is wrong with any.

    Names are read case-blind. A list setting's value is a JSON list; any other value is
    given to pydantic as the text it is, which reads numbers and booleans from it.
    """
    found: dict[str, dict[str, Any]] = {}
    problems = []
    for name, value in sorted(os.environ.items()):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_NOT_SETTINGS):
            continue
        section, _, key = upper[len(ENV_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(section)
        if field is None:
            problems.append(f"{name}: unknown setting (there is no [{section}] section)")
            continue
        inner = field.annotation.model_fields.get(key)  # type: ignore[union-attr]
        if inner is None:
            hint = "" if key else f" (expected {ENV_PREFIX}{section.upper()}__<KEY>)"
            problems.append(f"{name}: unknown setting{hint}")
            continue
        if get_origin(inner.annotation) in (list, tuple, set, frozenset):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                problems.append(
                    f"{name}: expected a JSON list such as '[\"derived.*\"]' (got {value!r})"
                )
                continue
        found.setdefault(section, {})[key] = value
    return found, problems


def _describe(err: Any, from_env: dict[str, dict[str, Any]]) -> str:
    key = ".".join(str(part) for part in err["loc"])
    section, name = (str(part) for part in (*err["loc"], "", "")[:2])
    if name in from_env.get(section, {}):
        key += f" ({ENV_PREFIX}{section.upper()}__{name.upper()})"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown setting"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def dump_defaults() -> dict[str, dict[str, Any]]:
    """The default value of every setting, by section (used to check config/ctmirror.toml)."""
    return Settings.model_construct().model_dump(mode="json")

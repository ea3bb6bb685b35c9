"""The errors ctmirror raises on purpose.

Each error builds its message in ``__init__`` and carries what its callers need:
``exit_code`` for the CLI (2 = the user asked for something invalid, 1 = it
failed at run time) and ``http_status`` for the HTTP API.
"""

from __future__ import annotations


class MirrorError(Exception):
    """Base of every error ctmirror raises deliberately."""

    exit_code = 1
    http_status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(MirrorError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2
    http_status = 422
    code = "invalid_request"


class ConfigError(UsageError):
    """A setting is unknown or has a wrong value."""

    code = "invalid_config"

    def __init__(self, problems: list[str], origin: str) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({origin}):\n{lines}")


class InvalidNctId(UsageError):
    code = "invalid_nct_id"

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(
            f"{value!r} is not an NCT id (expected 'NCT' followed by 8 digits, e.g. NCT03039062)"
        )


class Conflict(UsageError):
    """What the request would create exists already."""

    http_status = 409
    code = "conflict"


class NotFound(MirrorError):
    exit_code = 1
    http_status = 404
    code = "not_found"


class Unauthorized(MirrorError):
    """A request without the bearer token it needs (or with a wrong one)."""

    exit_code = 2
    http_status = 401
    code = "unauthorized"


class Forbidden(MirrorError):
    """A request this mirror refuses whatever the token (e.g. writes with no api.token set)."""

    exit_code = 2
    http_status = 403
    code = "forbidden"


class MalformedRecord(MirrorError):
    """A study record from a source is not a usable API v2 study object."""

    code = "malformed_record"

    def __init__(self, reason: str, nct_id: str | None = None) -> None:
        self.reason, self.nct_id = reason, nct_id
        where = f" {nct_id}" if nct_id else ""
        super().__init__(f"malformed study record{where}: {reason}")


class SourceError(MirrorError):
    """The source answered in a way that retrying will not fix (or retries ran out)."""

    http_status = 502
    code = "source_error"


class TransientSourceError(SourceError):
    """A failure worth retrying: 429, 5xx, a timeout, a dropped or truncated response."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(MirrorError):
    code = "storage_error"


class NoMirror(StorageError):
    """A command that only reads found no mirror where the settings point (it creates none)."""

    code = "no_mirror"

    def __init__(self, where: str, why: str) -> None:
        super().__init__(
            f"no mirror at {where}: {why} (a sync or import creates one; --config or "
            "CTMIRROR_DATABASE__URL points elsewhere)"
        )

"""Engine, sessions and migrations.

SQLite runs in WAL mode with a busy timeout; write transactions on SQLite start with
``BEGIN IMMEDIATE`` so two writers queue instead of failing on a lock upgrade.
Alembic owns the schema: a fresh SQLite file is migrated on first use; anything
else behind the code's revision is an error that says to run ``ctmirror db upgrade``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mirror.errors import NoMirror, StorageError, UsageError
from mirror.logging import get_logger
from mirror.store.schema import Base

# Alembic is imported where it works (migrating, checking, a schema that is not at head): a
# command on an up-to-date mirror only reads the revision row (docs/performance.md).
if TYPE_CHECKING:
    from alembic.config import Config

log = get_logger(__name__)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _migrations_dir() -> Path:
    """The Alembic scripts: installed as ``mirror/migrations``, or ``alembic/`` in a checkout."""
    installed = Path(str(resources.files("mirror"))) / "migrations"
    if (installed / "env.py").is_file():
        return installed
    return Path(__file__).resolve().parents[2] / "alembic"


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class Database:
    """The one engine of a process, and the sessions made from it."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            self.url = make_url(url)
        except ArgumentError:
            raise UsageError(f"database.url {url!r} is not a database URL") from None
        self.engine = _create_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def session(self) -> Session:
        """A session for reading (and small writes)."""
        return self._sessions()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._write_sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        self._migrate(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        self._migrate(command.downgrade, revision)

    def _migrate(self, step: Any, revision: str) -> None:
        with self.engine.begin() as conn:
            cfg = _alembic_config(self.url.render_as_string(hide_password=False))
            cfg.attributes["connection"] = conn
            step(cfg, revision)

    def current_revision(self) -> str | None:
        from alembic.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(_alembic_config(str(self.url)))
        return script.get_current_head()

    def schema_drift(self) -> list[Any]:
        """Differences between the models and the migrated database (empty = in agreement)."""
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with self.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))

    def require_mirror(self) -> None:
        """NoMirror unless the database exists and holds a ctmirror schema (creates nothing:
        on SQLite, connecting to a missing file would create it)."""
        where = self.url.render_as_string(hide_password=True)
        path = self.url.database
        if self.is_sqlite and path and path != ":memory:" and not Path(path).is_file():
            self.dispose()
            raise NoMirror(where, f"{Path(path).resolve()} does not exist")
        if self._at_head():
            return
        try:
            current = self.current_revision()
        except OperationalError as exc:
            self.dispose()
            raise StorageError(f"cannot open database {where}: {exc.orig}") from None
        if current is None:
            self.dispose()
            raise NoMirror(where, "the database holds no ctmirror schema")

    def ensure_schema(self) -> None:
        """Migrate a fresh SQLite database; refuse to run on a schema behind the code."""
        if self._at_head():
            return
        try:
            current, head = self.current_revision(), self.head_revision()
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.url!r}: {exc.orig}") from None
        if current == head:
            return
        if current is None and self.is_sqlite and not inspect(self.engine).get_table_names():
            log.info("db.migrate", url=str(self.url), revision=head)
            self.upgrade()
            return
        raise StorageError(
            f"database {self.url!r} is at schema revision {current or 'none'}, this ctmirror "
            f"needs {head}: run `ctmirror db upgrade`"
        )

    def _at_head(self) -> bool:
        """Whether the database is at the newest revision, told without Alembic when the
        scripts have one head: one read of ``alembic_version`` (False: ask Alembic)."""
        head = _scripts_head()
        if head is None:
            return False
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except DBAPIError:
            return False
        return [tuple(row) for row in rows] == [(head,)]


def _create_engine(url: str, *, echo: bool) -> Engine:
    kwargs: dict[str, Any] = {
        "echo": echo,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    sqlite = url.startswith("sqlite")
    if sqlite:
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if sqlite:
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_REVISION = re.compile(r"^(down_)?revision(?:: [^=]+)? = (None|\"(\w+)\")$", re.MULTILINE)


@cache
def _scripts_head() -> str | None:
    """The one head of the migration scripts, read from their ``revision`` and
    ``down_revision`` lines; None when they are not that simple (Alembic then decides)."""
    revisions, parents = set(), set()
    for script in (_migrations_dir() / "versions").glob("*.py"):
        found = {bool(m[1]): m[3] for m in _REVISION.finditer(script.read_text())}
        if len(found) != 2 or found[False] is None:
            return None
        revisions.add(found[False])
        parents.add(found[True])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def open_database(
    url: str, *, echo: bool = False, migrate: bool = True, create: bool = True
) -> Database:
    """Open ``url``; with ``migrate``, a fresh SQLite file is created and migrated. Without
    ``create`` nothing is created: a missing or schema-less database is :class:`NoMirror`."""
    db = Database(url, echo=echo)
    if not create:
        db.require_mirror()
    if migrate:
        db.ensure_schema()
    return db

"""Alembic environment: the URL comes from ctmirror's settings unless a connection is given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mirror.store import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from mirror.config import load_settings

    return load_settings().database.url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from mirror.store import Database

    db = Database(_url())
    with db.engine.begin() as conn:
        _run(conn)
    db.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

"""The ``ctmirror`` command line.

Exit codes: 0 success, 1 a run-time failure (source unreachable, study not found),
2 a usage error (bad NCT id, bad option, bad setting). Output goes to stdout,
logs and progress to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from mirror.cli.audit import audit_command
from mirror.cli.context import Context
from mirror.cli.db import db
from mirror.cli.export import export_command
from mirror.cli.feed import changes, diff, fields, history, show
from mirror.cli.history import backfill, classes, timeline
from mirror.cli.imports import import_command
from mirror.cli.notify import notify_group
from mirror.cli.services import daemon_command, serve
from mirror.cli.sync import sync
from mirror.cli.watches import watch
from mirror.cli.webhooks import webhooks_group
from mirror.errors import MirrorError


class MirrorGroup(click.Group):
    """Turns ctmirror's own errors into a message and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MirrorError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=MirrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Settings file (default: $CTMIRROR_CONFIG, else ./config/ctmirror.toml).",
)
@click.version_option(package_name="ctmirror")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """ctmirror: a change-tracking mirror of ClinicalTrials.gov."""
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)


for command in (
    sync,
    watch,
    changes,
    history,
    diff,
    show,
    fields,
    backfill,
    timeline,
    classes,
    import_command,
    serve,
    daemon_command,
    webhooks_group,
    notify_group,
    db,
    export_command,
    audit_command,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="ctmirror")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

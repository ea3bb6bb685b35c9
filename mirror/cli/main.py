"""The ``ctmirror`` command line.

Exit codes: 0 success, 1 a run-time failure (source unreachable, study not found),
2 a usage error (bad NCT id, bad option, bad setting). Output goes to stdout,
logs and progress to stderr.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from mirror.cli.context import Context
from mirror.errors import MirrorError

# Each command by name -> "module:attribute", imported only when that command runs (or help
# lists them all): `ctmirror changes` never imports the HTTP app, the pages or the notifiers.
COMMANDS: dict[str, str] = {
    "sync": "mirror.cli.sync:sync",
    "watch": "mirror.cli.watches:watch",
    "changes": "mirror.cli.feed:changes",
    "history": "mirror.cli.feed:history",
    "diff": "mirror.cli.feed:diff",
    "show": "mirror.cli.feed:show",
    "fields": "mirror.cli.feed:fields",
    "backfill": "mirror.cli.history:backfill",
    "timeline": "mirror.cli.history:timeline",
    "classes": "mirror.cli.history:classes",
    "import": "mirror.cli.imports:import_command",
    "serve": "mirror.cli.services:serve",
    "daemon": "mirror.cli.services:daemon_command",
    "webhooks": "mirror.cli.webhooks:webhooks_group",
    "notify": "mirror.cli.notify:notify_group",
    "db": "mirror.cli.db:db",
    "export": "mirror.cli.export:export_command",
    "audit": "mirror.cli.audit:audit_command",
}


class MirrorGroup(click.Group):
    """Loads the commands of :data:`COMMANDS` when asked for; turns ctmirror's own errors into a
    message and an exit code instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command) and command.name == cmd_name
            self.add_command(command)
        return self.commands.get(cmd_name)

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


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="ctmirror")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

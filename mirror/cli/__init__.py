"""The ``ctmirror`` command line: one module per command group, sharing ``context``."""

from mirror.cli.main import cli, main

__all__ = [
    "cli",
    "main",
]

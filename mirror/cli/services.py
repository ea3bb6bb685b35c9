"""The long-running processes: ``ctmirror serve`` (HTTP API, pages) and ``ctmirror daemon``."""

from __future__ import annotations

import socket

import click

from mirror.cli.context import Context, pass_ctx
from mirror.errors import MirrorError
from mirror.store import RunStatus


@click.command()
@click.option("--host", help="Interface to listen on (default: the api.host setting).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: api.port).")
@pass_ctx
def serve(c: Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the change feed and the study pages (OpenAPI at /docs)."""
    import gc
    import signal

    import uvicorn

    from mirror.serve import create_app

    api = create_app(c.app)
    # What is loaded now lives as long as the process: keep it out of every later full
    # garbage collection (those paused requests by tens of milliseconds).
    gc.freeze()
    host = host or c.settings.api.host
    port = c.settings.api.port if port is None else port
    sock = _listening_socket(host, port)
    port = sock.getsockname()[1]
    click.echo(f"serving on http://{host}:{port} (docs at /docs); Ctrl-C stops", err=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handlers it found: these make that a normal end (exit 0), not a kill or "Aborted!".
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        # log_config=None: uvicorn keeps to the logging configured by configure_logging.
        config = uvicorn.Config(api, log_config=None, access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped", err=True)


def _listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything is announced: a busy port or an address
    this host does not have is one clear error (exit 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MirrorError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@click.command("daemon")
@click.option(
    "--once",
    is_flag=True,
    help="Run every due watch once, send due webhooks and notifications, exit.",
)
@pass_ctx
def daemon_command(c: Context, once: bool) -> None:
    """Sync watches on their schedules, deliver webhooks and notifications, until SIGTERM or
    Ctrl-C."""
    from mirror.daemon import run_daemon

    summary = run_daemon(c.app, once=once)
    if summary is None:
        return
    failed = sum(r.status is not RunStatus.OK for r in summary.runs)
    note = "" if summary.scheduler else " (another daemon holds the scheduler lock: none queued)"
    click.echo(
        f"daemon --once: {summary.queued} watch runs queued{note}, {len(summary.runs)} run, "
        f"{failed} failed; {summary.attempts} webhook attempts"
        + (f", {summary.notifications} notification attempts" if summary.notifications else "")
    )
    if failed:
        raise click.exceptions.Exit(1)

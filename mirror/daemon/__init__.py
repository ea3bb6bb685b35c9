"""The background process: sync workers, the webhook dispatcher and, in the one daemon holding the
scheduler lock, the scheduler; the job queue they share through the database.
"""

from mirror.daemon.process import Daemon, run_daemon

__all__ = [
    "Daemon",
    "run_daemon",
]

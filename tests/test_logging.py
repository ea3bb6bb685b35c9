"""The JSON log: one whole JSON object per line, whoever writes it and from whichever thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

_SCRIPT = textwrap.dedent(
    """
    import logging, threading
    from mirror.config import LogSettings
    from mirror.logging import configure_logging, get_logger

    configure_logging(LogSettings(format="json", level="info"))
    log = get_logger()

    def ours(n):
        for i in range(400):
            log.info("sync.page", thread=n, i=i, padding="x" * 200)

    def theirs(n):
        for i in range(400):
            logging.getLogger("somelibrary").warning("connection reset %s/%s", n, i)

    threads = [threading.Thread(target=f, args=(n,)) for n in range(3) for f in (ours, theirs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


def test_json_log_lines_stay_whole_under_threads() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, check=True, timeout=60
    )
    lines = done.stderr.splitlines()
    events = [orjson.loads(line) for line in lines]  # a split or merged line fails here
    assert len(events) == 2400
    ours = [e for e in events if e["event"] == "sync.page"]
    theirs = [e for e in events if e.get("logger") == "somelibrary"]
    assert len(ours) == len(theirs) == 1200
    assert theirs[0]["level"] == "warning" and theirs[0]["event"].startswith("connection reset ")
    assert all("timestamp" in e for e in events)


_FORK = textwrap.dedent(
    """
    import os
    from mirror import logging as mirror_logging
    from mirror.config import LogSettings

    mirror_logging._lock.acquire()  # as another thread of the parent could hold it at a fork
    pid = os.fork()
    if pid == 0:
        mirror_logging.configure_logging(LogSettings(format="json", level="info"))
        mirror_logging.get_logger().info("child.logged")
        os._exit(0)
    os.waitpid(pid, 0)
    """
)


def test_a_forked_worker_logs_whatever_the_parent_held() -> None:
    """An import worker forked while the parent held the logging lock still logs (no hang)."""
    done = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, timeout=30)
    assert orjson.loads(done.stderr.splitlines()[0])["event"] == "child.logged"

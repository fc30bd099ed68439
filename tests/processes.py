"""Child processes of tests: started with SIGINT at its default action, killed at teardown.

A run started with SIGINT ignored (``cmd &`` in a script, nohup, CI wrappers) hands the
ignored disposition to every child through fork and exec, so a child a test stops with
SIGINT (Ctrl-C) would never stop. Every process a test starts goes through the
``processes`` fixture, which resets SIGINT in the child and kills whatever is still running
when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

KILL_WAIT_S = 10.0

Command = Sequence[str | os.PathLike[str]]


def default_sigint() -> None:
    """Run in the child between fork and exec: SIGINT back to its default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Processes:
    """Starts child processes for one test; ``close()`` kills and reaps those left."""

    def __init__(self) -> None:
        self._started: list[tuple[subprocess.Popen[Any], bool]] = []

    def start(self, args: Command, **options: Any) -> subprocess.Popen[Any]:
        """Start ``args`` as ``subprocess.Popen`` does, with SIGINT at its default action."""
        process: subprocess.Popen[Any] = subprocess.Popen(
            args, preexec_fn=default_sigint, **options)
        # A process that leads its own group may leave children (gunicorn's workers): the
        # cleanup kills the whole group.
        own_group = bool(options.get("start_new_session")) or options.get("process_group") == 0
        self._started.append((process, own_group))
        return process

    def run(self, args: Command, *, timeout: float, **options: Any
            ) -> subprocess.CompletedProcess[Any]:
        """Run ``args`` to its end as ``subprocess.run`` does (which kills it on a timeout or
        an error), with SIGINT at its default action."""
        options.setdefault("check", False)
        return subprocess.run(args, preexec_fn=default_sigint, timeout=timeout, **options)

    def close(self) -> None:
        """Kill every started process (its group, if it leads one) still alive; reap it."""
        for process, own_group in self._started:
            if own_group:
                with contextlib.suppress(ProcessLookupError):  # the group is gone already
                    os.killpg(process.pid, signal.SIGKILL)
            elif process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=KILL_WAIT_S)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._started.clear()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start child processes for this test; any still alive at its end are killed."""
    started = Processes()
    try:
        yield started
    finally:
        started.close()

"""Background work that repeats: one daemon thread per task, which outlives the task's failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``action`` every ``interval_s`` seconds in a daemon thread until ``stop``.

    ``on_failure`` completes the ERROR line of a failed run, saying what happens next.
    """

    def __init__(self, name: str, interval_s: float, action: Callable[[], object], *,
                 on_failure: str = "trying again in one interval") -> None:
        if interval_s <= 0:
            raise ValueError(f"{name}: the interval must be positive")
        self.name = name
        self.interval_s = interval_s
        self.action = action
        self.on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        """Start the thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for the run in progress, if any."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def running(self) -> bool:
        """Return whether the thread is running."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.action()
            except Exception:  # a storage outage must not end the task for good
                log.exception("background task %s failed; %s", self.name, self.on_failure)

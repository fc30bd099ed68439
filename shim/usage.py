"""Per-client call counts, kept in memory and written to the store in batches.

Counting must not cost a database write per legacy request: ``count`` only touches a dict,
and a daemon thread (``start``) flushes the batch every few seconds. The status page flushes
before it reads, so its figures are exact for this process up to the moment it is shown
(other processes' counts arrive with their next periodic flush). ``stop`` flushes what is
left; it also runs at interpreter exit, so a graceful stop loses no count.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from shim.periodic import Periodic

if TYPE_CHECKING:
    from shim.store.base import Store

log = logging.getLogger(__name__)
HOUR_S = 3600
WINDOW_HOURS = 24


class UsageRecorder:
    """Counts calls per (client, hour) and flushes them to the store."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time keeps batches in order
        self._task: Periodic | None = None

    def count(self, client_id: str) -> None:
        """Count one call of ``client_id`` now."""
        hour = int(self.clock() // HOUR_S)
        with self._lock:
            self._pending[(client_id, hour)] += 1

    def pending(self) -> int:
        """Return how many counted calls are not written to the store yet."""
        with self._lock:
            return sum(self._pending.values())

    def flush(self) -> None:
        """Write the pending counts; on failure they are kept for the next flush."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, Counter()
            if not batch:
                return
            try:
                self.store.add_usage(dict(batch))
            except Exception:
                with self._lock:
                    self._pending.update(batch)
                raise

    def last_24h(self) -> dict[str, int]:
        """Return calls per client over the last 24 hours (this hour included)."""
        self.flush()
        return self.store.usage_since(int(self.clock() // HOUR_S) - (WINDOW_HOURS - 1))

    def start(self, interval_s: float) -> UsageRecorder:
        """Flush every ``interval_s`` seconds from a daemon thread until ``stop``; return self.

        A failed flush keeps its counts for the next one.
        """
        if self._task is None:
            self._task = Periodic("usage-flusher", interval_s, self.flush,
                                  on_failure="the counts are kept for the next flush").start()
            atexit.register(self.stop)
        return self

    @property
    def running(self) -> bool:
        """Return whether the flusher thread is running."""
        return self._task is not None and self._task.running

    def stop(self) -> None:
        """Stop the thread (if started), then write what is still pending."""
        task, self._task = self._task, None
        if task is not None:
            atexit.unregister(self.stop)
            task.stop()
        try:
            self.flush()
        except Exception:  # the store is gone: say how much is lost instead of a traceback
            log.exception("could not write %d counted calls on stop", self.pending())

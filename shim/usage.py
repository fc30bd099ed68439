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

log = logging.getLogger(__name__)
HOUR_S = 3600
WINDOW_HOURS = 24


class UsageRecorder:
    """Counts calls per (client, hour) and flushes them to the store."""

    def __init__(self, store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time keeps batches in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        """Flush every ``interval_s`` seconds from a daemon thread until ``stop``; return self."""
        if interval_s <= 0:
            raise ValueError("the flush interval must be positive")
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(interval_s,),
                                            name="usage-flusher", daemon=True)
            self._thread.start()
            atexit.register(self.stop)
        return self

    @property
    def running(self) -> bool:
        """Return whether the flusher thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the thread (if started), then write what is still pending."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            atexit.unregister(self.stop)
            if thread is not threading.current_thread():
                thread.join()
        try:
            self.flush()
        except Exception:  # the store is gone: say how much is lost instead of a traceback
            log.exception("could not write %d counted calls on stop", self.pending())

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.flush()
            except Exception:  # a storage outage must not kill the thread; counts are kept
                log.exception("writing the usage counts failed; retrying on the next flush")

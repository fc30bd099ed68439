"""Per-client call counts, kept in memory and written to the store in batches.

Counting must not cost a database write per legacy request; the status page reads the store
after a flush, so its figures are exact up to the moment it is shown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)
HOUR_S = 3600


class UsageRecorder:
    """Counts calls per (client, hour) and flushes them to the store."""

    def __init__(self, store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def count(self, client_id: str) -> None:
        """Count one call of ``client_id`` now."""
        hour = int(self.clock() // HOUR_S)
        with self._lock:
            self._pending[(client_id, hour)] += 1

    def flush(self) -> None:
        """Write the pending counts; on failure they are kept for the next flush."""
        with self._lock:
            batch, self._pending = self._pending, Counter()
        try:
            self.store.add_usage(dict(batch))
        except Exception:
            with self._lock:
                self._pending.update(batch)
            raise

    def last_24h(self) -> dict[str, int]:
        """Return calls per client over the last 24 hours (this hour included)."""
        self.flush()
        return self.store.usage_since(int(self.clock() // HOUR_S) - 23)

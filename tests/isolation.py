"""Process-wide state a test may change in passing, put back afterwards.

``cli.main`` run in the test process configures logging as the command line does (root
level, a JSON handler on stderr); left in place, the next tests would run at that level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def root_logging_kept() -> Iterator[None]:
    """Restore the root logger's level and handlers on exit."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
        root.setLevel(level)

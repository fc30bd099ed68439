"""An in-process cache of issued-token lookups on PostgreSQL that never outlives a revocation.

Every legacy request looks its bearer token up (``SqlStore.find_caller``): on PostgreSQL a
round trip. This module keeps the answers in the process and makes revocation (``clients
disable``, ``clients rotate``, seller removal) wait until no instance can serve from a stale
entry. The design, and why each part is needed:

* **Listening.** Each process that looks tokens up holds one connection of its own, in a
  background thread, that ``LISTEN``s on ``CHANNEL``. A revocation commits its change and a
  ``pg_notify`` in one transaction. On a notification the process empties its cache (all of
  it: revocations are rare) and writes an acknowledgement row (``token_cache_acks``).
* **Registration and heartbeats.** After its ``LISTEN`` the thread registers the instance in
  ``token_cache_instances`` (``registered_at``, in the database's clock) and heartbeats every
  ``HEARTBEAT_S`` on the same connection. A heartbeat that succeeds grants a **lease**: the
  cache may be read until ``LEASE_S`` after the heartbeat was *sent* (a local monotonic
  time, so the lease always ends before the database's ``heartbeat_at + LEASE_S``). While
  the connection is down, being re-opened, or the lease has lapsed, every lookup goes to the
  database: the cache is never read when a notification may have been missed. A lease that
  lapsed is not resumed: the next heartbeat empties the cache first, since a revocation may
  have counted the instance as dead meanwhile.
* **Acknowledged revocation.** After its commit the command reads the database clock
  (``committed_at``) and waits for an ack from every *live* instance (heartbeat newer than
  ``LEASE_S + MARGIN_S``) registered before ``committed_at``. An instance registered later
  started listening after the commit and with an empty cache, and every lookup it caches
  began after the commit. An instance whose heartbeat is older is dead or lapsed: its lease
  is over, and it empties its cache before it reads it again. Instances that crash stop
  heartbeating and drop out of the live set within ``LEASE_S + MARGIN_S``.
* **The fallback.** If a live instance does not ack within ``ACK_WAIT_S``, the command marks
  it ``evicted`` (its heartbeats stop renewing its lease), waits until its last heartbeat's
  lease is surely over, and says so. The evicted instance, at its next heartbeat, empties its
  cache and registers again. The wait is bounded: ``ACK_WAIT_S + LEASE_S + MARGIN_S``. No
  request checks a flag in the database: that would be the round trip the cache saves.
* **Races inside the process.** A lookup that read the database before a notification must
  not put its (now stale) answer in the cache after the notification emptied it: each lookup
  notes the cache's epoch before its query and stores its answer only if no emptying
  happened meanwhile.
* **Expiry and issuance.** Entries keep the token's expiry and are not served after it; a new
  token is a new digest (a miss, then cached); misses are never cached, so a token issued by
  another instance works at once.

SQLite has no cache: its server is one process, but the registry commands run in another,
so an in-process invalidation would never hear of them; a local lookup costs tens of
microseconds anyway.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "shim_token_revocations"
HEARTBEAT_S = 0.5  # how often an instance renews its lease
LEASE_S = 2.0  # how long after a heartbeat was sent its instance may read its cache
MARGIN_S = 0.5  # slack between clocks' rates and statement latencies
ACK_WAIT_S = 2.0  # how long a revocation waits for acks before it evicts the silent
MAX_ENTRIES = 50_000  # ~200 bytes each: at most ~10 MB per process
POLL_S = 0.003  # how often a revocation looks for its acks
RETRY_S = 1.0  # the pause before the listener connects again
FORGET_AFTER_S = 3600.0  # rows of instances silent that long are deleted
_NOW = "extract(epoch from clock_timestamp())::double precision"

# Times in the database's clock only, so that every instance and command reads one clock.
# Built once from constants; no value is ever formatted into SQL.
_ACK = ("INSERT INTO token_cache_acks (revocation, instance, at) "  # noqa: S608
        f"VALUES (%s, %s, {_NOW}) ON CONFLICT DO NOTHING")
_REGISTER = ("INSERT INTO token_cache_instances (instance, registered_at, "  # noqa: S608
             f"heartbeat_at, evicted) VALUES (%s, {_NOW}, {_NOW}, FALSE) "
             "ON CONFLICT (instance) DO UPDATE SET registered_at = excluded.registered_at, "
             "heartbeat_at = excluded.heartbeat_at, evicted = FALSE")

T = TypeVar("T")


class TokenCache:
    """Lookups of issued tokens cached in this process, read only while listening under a lease.

    ``start`` is implicit: the first ``find`` in a process starts the listening thread (so a
    gunicorn worker starts its own after the fork, and a CLI command never starts one).
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = connect
        self._clock = clock
        self._guard = threading.Lock()
        self._entries: dict[str, tuple[float, Any]] = {}  # digest -> (expires_at, answer)
        self._epoch = 0
        self._leased_until = 0.0  # 0: not listening, or the lease lapsed
        self._pid = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.instance = ""
        self.listener_pid = 0  # the listening connection's server process, for diagnosis
        self._failing = False

    # --- the request path ----------------------------------------------------------------

    def find(self, digest: str, now: float, expires_at: Callable[[T], float],
             load: Callable[[], T | None]) -> T | None:
        """Return the cached answer for ``digest`` while it is safe, else ``load()``'s."""
        if self._pid != os.getpid():
            self._start()
        with self._guard:
            usable = self._clock() < self._leased_until
            if usable:
                cached = self._entries.get(digest)
                if cached is not None:
                    if cached[0] > now:
                        return cached[1]  # type: ignore[no-any-return]
                    del self._entries[digest]
            epoch = self._epoch
        found = load()
        if found is not None and usable:
            with self._guard:
                if self._epoch == epoch:  # nothing was revoked while we read
                    if len(self._entries) >= MAX_ENTRIES:
                        self._entries.clear()
                    self._entries[digest] = (expires_at(found), found)
        return found

    def reading(self) -> bool:
        """Return whether a lookup now may be answered from the cache (listening, leased)."""
        with self._guard:
            return self._clock() < self._leased_until

    def _empty(self, *, lease_until: float | None = None) -> None:
        with self._guard:
            self._entries.clear()
            self._epoch += 1
            if lease_until is not None:
                self._leased_until = lease_until

    # --- the listening thread ------------------------------------------------------------

    def _start(self) -> None:
        with self._guard:
            if self._pid == os.getpid():
                return
            # A fork inherits the entries and the lease, but not the thread: start afresh.
            self._entries.clear()
            self._epoch += 1
            self._leased_until = 0.0
            self._pid = os.getpid()
            self._stopped = threading.Event()
            self.instance = f"{os.uname().nodename}:{self._pid}:{secrets.token_hex(4)}"
            self._thread = threading.Thread(target=self._run, name="shim-token-cache",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with self._connect() as connection:
                    self._listen(connection)
            except Exception as error:  # any failure: bypass the cache, listen again
                if not self._failing:  # say so once per outage, not once a second
                    log.warning("token cache off until it listens again (lookups go to the "
                                "database): %s", type(error).__name__,
                                exc_info=not isinstance(error, psycopg.Error))
                self._failing = True
            finally:
                self._empty(lease_until=0.0)
            self._stopped.wait(RETRY_S)

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        self.listener_pid = connection.info.backend_pid
        connection.execute(f"LISTEN {CHANNEL}")
        connection.execute(
            f"DELETE FROM token_cache_instances WHERE heartbeat_at < {_NOW} - %s",  # noqa: S608
            (FORGET_AFTER_S,))
        self._register(connection)
        log.info("token cache on: instance %s listens for revocations", self.instance)
        self._failing = False
        next_beat = self._clock() + HEARTBEAT_S
        while not self._stopped.is_set():
            timeout = max(0.0, next_beat - self._clock())
            notes = list(connection.notifies(timeout=timeout, stop_after=1))
            if notes:
                self._empty()  # before the acks: an ack promises the entries are gone
                for note in notes:
                    connection.execute(_ACK, (note.payload, self.instance))
            if self._clock() >= next_beat:
                self._heartbeat(connection)
                next_beat = self._clock() + HEARTBEAT_S

    def _register(self, connection: psycopg.Connection[Any]) -> None:
        """Register (again) with an empty cache, then take a lease."""
        self._empty(lease_until=0.0)
        sent = self._clock()
        connection.execute(_REGISTER, (self.instance,))
        with self._guard:
            self._leased_until = sent + LEASE_S

    def _heartbeat(self, connection: psycopg.Connection[Any]) -> None:
        sent = self._clock()
        renewed = connection.execute(
            f"UPDATE token_cache_instances SET heartbeat_at = {_NOW} "  # noqa: S608
            "WHERE instance = %s AND NOT evicted RETURNING instance",
            (self.instance,)).fetchone()
        with self._guard:
            lapsed = self._clock() >= self._leased_until
        if renewed is None or lapsed:
            # Evicted by a revocation that waited too long for us, or silent so long that a
            # revocation may have taken us for dead: start again with nothing cached.
            if renewed is None:
                log.warning("token cache: this instance missed a revocation's deadline; "
                            "its cache was emptied")
            self._register(connection)
            return
        with self._guard:
            self._leased_until = sent + LEASE_S

    def close(self) -> None:
        """Stop listening and deregister (a crashed instance's heartbeat just expires)."""
        self._stopped.set()
        self._empty(lease_until=0.0)
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout=HEARTBEAT_S + 1)
        if self.instance and self._pid == os.getpid():
            try:
                with self._connect() as connection:
                    connection.execute("DELETE FROM token_cache_instances WHERE instance = %s",
                                       (self.instance,))
            except psycopg.Error:
                pass  # its heartbeat expires instead


@dataclass
class Revocation:
    """What a revocation waited for: the instances that acked, and those evicted instead."""

    revocation: str
    acked: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    waited_s: float = 0.0


def await_acks(connection: psycopg.Connection[Any], revocation: str, *,
               ack_wait_s: float = ACK_WAIT_S) -> Revocation:
    """Return once no live instance can serve a token the committed ``revocation`` ended.

    ``connection`` autocommits. Waits for every live instance registered before now to ack;
    evicts those that do not within ``ack_wait_s`` and waits out their leases.
    """
    started = time.monotonic()
    committed_at = _db_now(connection)
    live = (f"FROM token_cache_instances i WHERE i.heartbeat_at > {_NOW} - %(window)s "
            "AND i.registered_at < %(committed)s")
    params = {"window": LEASE_S + MARGIN_S, "committed": committed_at,
              "revocation": revocation}
    deadline = started + ack_wait_s
    while True:
        rows = connection.execute(
            "SELECT i.instance, EXISTS (SELECT 1 FROM token_cache_acks a "  # noqa: S608
            "WHERE a.revocation = %(revocation)s AND a.instance = i.instance) AS acked "
            + live, params).fetchall()
        missing = [row[0] for row in rows if not row[1]]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    result = Revocation(revocation, acked=sorted(row[0] for row in rows if row[1]))
    if missing:
        # Their heartbeats stop renewing their leases from here; the last one's lease ends
        # by its heartbeat_at + LEASE_S (in the database's clock, which the wait reads).
        evicted = connection.execute(
            "UPDATE token_cache_instances SET evicted = TRUE WHERE instance = ANY(%s) "
            "RETURNING instance, heartbeat_at", (missing,)).fetchall()
        if evicted:
            last = max(row[1] for row in evicted)
            result.evicted = sorted(row[0] for row in evicted)
            while (left := last + LEASE_S + MARGIN_S - _db_now(connection)) > 0:
                time.sleep(min(left, 0.1))
    connection.execute("DELETE FROM token_cache_acks WHERE revocation = %s", (revocation,))
    result.waited_s = time.monotonic() - started
    return result


def _db_now(connection: psycopg.Connection[Any]) -> float:
    row = connection.execute(f"SELECT {_NOW}").fetchone()
    assert row is not None
    return float(row[0])

"""``SqlStore``: the database-backed store, one implementation over two backends.

The SQL is written once (``:name`` placeholders); a ``Backend`` (``sqlite.py``,
``postgres.py``) supplies connections, the placeholder style and the exclusive lock a
read-then-write needs. Secrets (seller tokens, app secrets) are sealed before they are
written and opened after they are read: a database dump holds no usable secret.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from shim.store.base import Locks
from shim.store.crypto import Sealer
from shim.store.errors import AlreadyExists, NotFound, StoreError, StoreUnavailable
from shim.store.migrations import MIGRATIONS
from shim.store.records import (
    DAY_S,
    App,
    Client,
    DayTally,
    IssuedToken,
    RefreshFailed,
    RouteUsage,
    Seller,
    TokenGrant,
)

if TYPE_CHECKING:
    from shim.store.tokencache import Revocation, TokenCache

log = logging.getLogger(__name__)


Decision = TokenGrant | RefreshFailed | None


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row``, psycopg's dict row)."""

    def keys(self) -> Iterable[str]: ...
    def __getitem__(self, column: str, /) -> Any: ...


class Tx(Protocol):
    """A transaction: run statements, read rows as mappings."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...
    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None: ...
    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]: ...


class Backend(Protocol):
    """What a database engine supplies to ``SqlStore``."""

    name: str
    row_lock: str  # appended to a SELECT that must lock the rows it reads

    def transaction(self, *, exclusive: bool = False,
                    single: bool = False) -> AbstractContextManager[Tx]: ...
    # A lock serializing token updates of a seller outside any transaction, or None when
    # the row lock of a transaction does that without blocking other writers.
    def seller_lock(self, name: str) -> AbstractContextManager[None] | None: ...
    @property
    def token_cache(self) -> TokenCache | None:
        """The in-process cache of token lookups (``tokencache``), or None: every lookup reads."""
    # Make ``tx``'s commit reach every instance's cache; return what to await, or None.
    def announce_revocation(self, tx: Tx) -> str | None: ...
    # Return once no instance can answer from a token the revocation ended.
    def await_revocation(self, revocation: str | None) -> Revocation | None: ...
    def locks(self) -> Locks: ...
    def migration_lock(self, tx: Tx) -> None: ...
    def is_duplicate(self, error: Exception) -> bool: ...
    def is_missing_table(self, error: Exception) -> bool: ...
    def close(self) -> None: ...


_SELLER_COLUMNS = (
    "name, store_id, region, app_key, access_token_enc, refresh_token_enc, access_expires_at, "
    "refresh_expires_at, account, country, user_info, generation, needs_reauth, "
    "reauth_reason, last_refresh_at, last_refresh_result"
)
# Built once from the fixed column list above; no value is ever formatted into SQL.
_SELECT_SELLERS = f"SELECT {_SELLER_COLUMNS} FROM sellers"  # noqa: S608
_INSERT_SELLER = (
    f"INSERT INTO sellers ({_SELLER_COLUMNS}, created_at) VALUES ("  # noqa: S608
    ":name, :store_id, :region, :app_key, :access_token_enc, :refresh_token_enc, "
    ":access_expires_at, :refresh_expires_at, :account, :country, :user_info, :generation, "
    ":needs_reauth, :reauth_reason, :last_refresh_at, :last_refresh_result, :now)"
)


class SqlStore:
    """A ``Store`` on SQLite or PostgreSQL; safe to share between threads and processes."""

    read_only = False

    def __init__(self, backend: Backend, sealer: Sealer, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self._sealer = sealer
        self._clock = clock

    # --- schema -------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations not applied yet; return their numbers."""
        applied = []
        with self._tx(exclusive=True) as tx:
            self.backend.migration_lock(tx)
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            done = {row["version"] for row in tx.all("SELECT version FROM schema_migrations")}
            for version, _title, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (version, applied_at) "
                           "VALUES (:version, :now)", {"version": version, "now": self._clock()})
                applied.append(version)
        if applied:
            log.info("applied database migrations %s on %s", applied, self.backend.name)
        return applied

    def schema_version(self) -> int:
        """Return the newest applied migration (0 for an empty database)."""
        with self._tx() as tx:
            try:
                row = tx.one("SELECT MAX(version) AS version FROM schema_migrations")
            except Exception as error:  # the table itself is missing
                if self.backend.is_missing_table(error):
                    return 0
                raise
        return int(row["version"] or 0) if row else 0

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""
        with self._tx() as tx:
            tx.one("SELECT 1 AS ok")

    def close(self) -> None:
        """Release the backend's connections."""
        self.backend.close()

    def locks(self) -> Locks:
        """Return per-key locks as wide as this store: every instance on PostgreSQL."""
        return self.backend.locks()

    @contextmanager
    def _tx(self, *, exclusive: bool = False, single: bool = False) -> Iterator[Tx]:
        with self.backend.transaction(exclusive=exclusive, single=single) as tx:
            yield tx

    # --- apps ---------------------------------------------------------------------------

    def put_app(self, app: App) -> None:
        """Add an app, or replace its secret."""
        with self._tx(exclusive=True) as tx:
            tx.execute(
                "INSERT INTO apps (app_key, app_secret_enc, created_at) "
                "VALUES (:key, :secret, :now) ON CONFLICT (app_key) "
                "DO UPDATE SET app_secret_enc = excluded.app_secret_enc",
                {"key": app.app_key, "secret": self._sealer.seal(app.app_secret),
                 "now": self._clock()})

    def get_app(self, app_key: str) -> App | None:
        """Return the app with this key, or ``None``."""
        with self._tx() as tx:
            row = tx.one("SELECT app_key, app_secret_enc FROM apps WHERE app_key = :key",
                         {"key": app_key})
        return App(row["app_key"], self._sealer.open(row["app_secret_enc"])) if row else None

    def list_apps(self) -> list[str]:
        """Return the keys of the stored apps."""
        with self._tx() as tx:
            return [row["app_key"] for row in tx.all("SELECT app_key FROM apps ORDER BY app_key")]

    # --- sellers ------------------------------------------------------------------------

    def add_seller(self, seller: Seller) -> None:
        """Add a seller (with tokens if it has them); ``AlreadyExists`` if the name is taken."""
        row = self._seller_row(seller)
        row["now"] = self._clock()
        try:
            with self._tx() as tx:
                tx.execute(_INSERT_SELLER, row)
        except Exception as error:
            if self.backend.is_duplicate(error):
                raise AlreadyExists(f"seller {seller.name!r} exists already") from None
            raise

    def get_seller(self, name: str) -> Seller | None:
        """Return the seller with this name, or ``None``."""
        with self._tx(single=True) as tx:
            row = tx.one(_SELECT_SELLERS + " WHERE name = :name", {"name": name})
        return self._seller(row) if row else None

    def list_sellers(self) -> list[Seller]:
        """Return every seller, by name."""
        with self._tx() as tx:
            rows = tx.all(_SELECT_SELLERS + " ORDER BY name")
        return [self._seller(row) for row in rows]

    def remove_seller(self, name: str) -> Revocation | None:
        """Remove a seller no client acts for; ``NotFound`` or ``StoreError`` otherwise.

        Returns once no instance's token cache can still act for it (``await_revocation``).
        """
        with self._tx(exclusive=True) as tx:
            users = tx.all("SELECT client_id FROM clients WHERE seller = :name", {"name": name})
            if users:
                ids = ", ".join(row["client_id"] for row in users)
                raise StoreError(f"seller {name!r} still has clients: {ids}")
            if not tx.one("SELECT name FROM sellers WHERE name = :name", {"name": name}):
                raise NotFound(f"no seller {name!r}")
            tx.execute("DELETE FROM sellers WHERE name = :name", {"name": name})
            # Its open consent links too: a seller added again under the name is another.
            tx.execute("DELETE FROM auth_states WHERE seller = :name", {"name": name})
            revocation = self.backend.announce_revocation(tx)
        return self.backend.await_revocation(revocation)

    def store_grant(self, name: str, grant: TokenGrant, *, result: str = "imported") -> Seller:
        """Replace the seller's tokens with ``grant`` (import or authorization)."""
        return self.update_tokens(name, lambda _seller: grant, result=result)

    def update_tokens(self, name: str, decide: Callable[[Seller], Decision], *,
                      result: str = "refreshed") -> Seller:
        """Lock the seller, re-read it, let ``decide`` act, write what it decided.

        Across threads, processes and instances only one caller at a time sees a given
        generation; the new tokens are committed before this returns, and a crash before
        the commit leaves the old pair whole. ``decide`` may call the platform (seconds):
        on PostgreSQL it runs under the seller's row lock, inside the transaction; on
        SQLite, where a write transaction locks the whole file (token issuance, usage,
        every other writer), it runs under the backend's seller lock between a read and a
        short write transaction.
        """
        seller_lock = self.backend.seller_lock(name)
        if seller_lock is None:
            with self._tx(exclusive=True) as tx:
                seller = self._read_seller(tx, name, lock=True)
                return self._write_decision(tx, seller, decide(seller), result)
        with seller_lock:
            # Read under the write lock, briefly: a file some writer keeps locked fails
            # here, before the platform rotates tokens that could then not be stored.
            with self._tx(exclusive=True) as tx:
                seller = self._read_seller(tx, name)
            decision = decide(seller)
            if decision is None:
                return seller
            try:
                with self._tx(exclusive=True) as tx:
                    current = self._read_seller(tx, name)
                    if current.generation != seller.generation:
                        # Only update_tokens moves the generation, under this lock.
                        log.warning("seller %s changed during its token update; keeping "
                                    "the stored tokens", name)
                        return current
                    return self._write_decision(tx, current, decision, result)
            except StoreUnavailable:
                if isinstance(decision, TokenGrant):
                    log.error("the new tokens of seller %s could not be stored (database "
                              "locked); if the platform rotated the refresh token, the "
                              "seller must authorize the shim again", name)
                raise

    def _read_seller(self, tx: Tx, name: str, *, lock: bool = False) -> Seller:
        row = tx.one(_SELECT_SELLERS + " WHERE name = :name"
                     + (self.backend.row_lock if lock else ""), {"name": name})
        if row is None:
            raise NotFound(f"no seller {name!r}")
        return self._seller(row)

    def _write_decision(self, tx: Tx, seller: Seller, decision: Decision,
                        result: str) -> Seller:
        """Write ``decision`` (new tokens, or a failed refresh) over ``seller``'s row."""
        if decision is None:
            return seller
        name = seller.name
        now = self._clock()
        if isinstance(decision, TokenGrant):
            updated = replace(
                seller, access_token=decision.access_token,
                refresh_token=decision.refresh_token,
                access_expires_at=decision.access_expires_at,
                refresh_expires_at=decision.refresh_expires_at,
                account=decision.account or seller.account,
                country=decision.country or seller.country,
                user_info=decision.user_info or seller.user_info,
                generation=seller.generation + 1, needs_reauth=False, reauth_reason=None,
                last_refresh_at=now, last_refresh_result=result)
            outcome = result
        else:
            access_expires_at = seller.access_expires_at
            if decision.retire_access:
                access_expires_at = min(access_expires_at or now, now)
            updated = replace(
                seller, access_expires_at=access_expires_at,
                needs_reauth=seller.needs_reauth or decision.reauthorize,
                reauth_reason=decision.reason if decision.reauthorize
                else seller.reauth_reason,
                last_refresh_at=now, last_refresh_result=f"failed: {decision.reason}")
            outcome = f"failed: {decision.reason}"
        fields = self._seller_row(updated)
        tx.execute(
            "UPDATE sellers SET access_token_enc = :access_token_enc, "
            "refresh_token_enc = :refresh_token_enc, access_expires_at = :access_expires_at, "
            "refresh_expires_at = :refresh_expires_at, account = :account, "
            "country = :country, user_info = :user_info, generation = :generation, "
            "needs_reauth = :needs_reauth, reauth_reason = :reauth_reason, "
            "last_refresh_at = :last_refresh_at, last_refresh_result = :last_refresh_result "
            "WHERE name = :name", fields)
        tx.execute("INSERT INTO refresh_log (seller, from_generation, at, result) "
                   "VALUES (:name, :generation, :now, :result)",
                   {"name": name, "generation": seller.generation, "now": now,
                    "result": outcome})
        return updated

    def refresh_log(self, name: str) -> list[Mapping[str, Any]]:
        """Return the seller's token changes, oldest first (generation, time, result)."""
        with self._tx() as tx:
            return [dict(row) for row in tx.all(
                "SELECT from_generation, at, result FROM refresh_log WHERE seller = :name "
                "ORDER BY at, from_generation", {"name": name})]

    def _seller_row(self, seller: Seller) -> dict[str, Any]:
        return {
            "name": seller.name, "store_id": seller.store_id, "region": seller.region,
            "app_key": seller.app_key,
            "access_token_enc": self._sealer.seal(seller.access_token),
            "refresh_token_enc": self._sealer.seal(seller.refresh_token),
            "access_expires_at": seller.access_expires_at,
            "refresh_expires_at": seller.refresh_expires_at,
            "account": seller.account, "country": seller.country,
            "user_info": json.dumps(list(seller.user_info)),
            "generation": seller.generation, "needs_reauth": bool(seller.needs_reauth),
            "reauth_reason": seller.reauth_reason, "last_refresh_at": seller.last_refresh_at,
            "last_refresh_result": seller.last_refresh_result,
        }

    def _seller(self, row: Row) -> Seller:
        return Seller(
            name=row["name"], store_id=row["store_id"], region=row["region"],
            app_key=row["app_key"],
            access_token=self._sealer.open(row["access_token_enc"]),
            refresh_token=self._sealer.open(row["refresh_token_enc"]),
            access_expires_at=row["access_expires_at"],
            refresh_expires_at=row["refresh_expires_at"],
            account=row["account"], country=row["country"],
            user_info=tuple(json.loads(row["user_info"] or "[]")),
            generation=int(row["generation"]), needs_reauth=bool(row["needs_reauth"]),
            reauth_reason=row["reauth_reason"], last_refresh_at=row["last_refresh_at"],
            last_refresh_result=row["last_refresh_result"],
        )

    # --- legacy clients -----------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        """Add a legacy client; ``AlreadyExists``/``NotFound`` for a taken id/unknown seller."""
        try:
            with self._tx(exclusive=True) as tx:
                if not tx.one("SELECT name FROM sellers WHERE name = :name",
                              {"name": client.seller}):
                    raise NotFound(f"no seller {client.seller!r}")
                tx.execute(
                    "INSERT INTO clients (client_id, secret_digest, scopes, seller, enabled, "
                    "created_at) VALUES (:id, :digest, :scopes, :seller, :enabled, :now)",
                    {"id": client.client_id, "digest": client.secret_digest,
                     "scopes": " ".join(sorted(client.scopes)), "seller": client.seller,
                     "enabled": bool(client.enabled), "now": self._clock()})
        except StoreError:
            raise
        except Exception as error:
            if self.backend.is_duplicate(error):
                raise AlreadyExists(f"client {client.client_id!r} exists already") from None
            raise

    def get_client(self, client_id: str, *, include_disabled: bool = False) -> Client | None:
        """Return the client (enabled only, unless asked), or ``None``."""
        with self._tx(single=True) as tx:
            row = tx.one("SELECT * FROM clients WHERE client_id = :id", {"id": client_id})
        if row is None or not (row["enabled"] or include_disabled):
            return None
        return self._client(row)

    def list_clients(self) -> list[Client]:
        """Return every client, enabled or not, by id."""
        with self._tx() as tx:
            return [self._client(row) for row in
                    tx.all("SELECT * FROM clients ORDER BY client_id")]

    def set_client_enabled(self, client_id: str, enabled: bool) -> Revocation | None:
        """Enable or disable a client; disabling also ends its issued tokens.

        A disable returns once no instance answers the tokens any more (``await_revocation``).
        """
        revocation = None
        with self._tx(exclusive=True) as tx:
            if not tx.one("SELECT client_id FROM clients WHERE client_id = :id",
                          {"id": client_id}):
                raise NotFound(f"no client {client_id!r}")
            tx.execute("UPDATE clients SET enabled = :enabled WHERE client_id = :id",
                       {"id": client_id, "enabled": bool(enabled)})
            if not enabled:
                tx.execute("DELETE FROM issued_tokens WHERE client_id = :id", {"id": client_id})
                revocation = self.backend.announce_revocation(tx)
        return self.backend.await_revocation(revocation)

    def set_client_secret(self, client_id: str, digest: str) -> Revocation | None:
        """Replace a client's secret digest; its issued tokens end with the old secret.

        Returns once no instance answers those tokens any more (``await_revocation``).
        """
        with self._tx(exclusive=True) as tx:
            if not tx.one("SELECT client_id FROM clients WHERE client_id = :id",
                          {"id": client_id}):
                raise NotFound(f"no client {client_id!r}")
            tx.execute("UPDATE clients SET secret_digest = :digest WHERE client_id = :id",
                       {"id": client_id, "digest": digest})
            tx.execute("DELETE FROM issued_tokens WHERE client_id = :id", {"id": client_id})
            revocation = self.backend.announce_revocation(tx)
        return self.backend.await_revocation(revocation)

    @staticmethod
    def _client(row: Row) -> Client:
        return Client(client_id=row["client_id"], secret_digest=row["secret_digest"],
                      scopes=frozenset(row["scopes"].split()), seller=row["seller"],
                      enabled=bool(row["enabled"]), created_at=row["created_at"])

    # --- issued legacy tokens -----------------------------------------------------------

    def save_token(self, digest: str, token: IssuedToken) -> None:
        """Store an issued token under its digest."""
        with self._tx() as tx:
            tx.execute("INSERT INTO issued_tokens (digest, client_id, scopes, expires_at) "
                       "VALUES (:digest, :client, :scopes, :expires)",
                       {"digest": digest, "client": token.client_id,
                        "scopes": " ".join(sorted(token.scopes)),
                        "expires": token.expires_at})

    def find_token(self, digest: str, now: float) -> IssuedToken | None:
        """Return the unexpired token stored under ``digest``, or ``None``."""
        with self._tx(single=True) as tx:
            row = tx.one("SELECT client_id, scopes, expires_at FROM issued_tokens "
                         "WHERE digest = :digest AND expires_at > :now",
                         {"digest": digest, "now": now})
        if row is None:
            return None
        return IssuedToken(client_id=row["client_id"], scopes=frozenset(row["scopes"].split()),
                           expires_at=row["expires_at"])

    def find_caller(self, digest: str, now: float) -> tuple[IssuedToken, Client] | None:
        """Return the unexpired token under ``digest`` and its enabled client, or ``None``.

        On PostgreSQL from the process's token cache when it is safe (``tokencache``).
        """
        cache = self.backend.token_cache
        if cache is None:
            return self._find_caller(digest, now)
        return cache.find(digest, now, _token_expiry, lambda: self._find_caller(digest, now))

    def _find_caller(self, digest: str, now: float) -> tuple[IssuedToken, Client] | None:
        # One query, because every legacy request asks it: on PostgreSQL each query is a
        # round trip.
        with self._tx(single=True) as tx:
            row = tx.one("SELECT t.scopes AS token_scopes, t.expires_at AS token_expires_at, "
                         "c.* FROM issued_tokens t JOIN clients c ON c.client_id = t.client_id "
                         "WHERE t.digest = :digest AND t.expires_at > :now AND c.enabled",
                         {"digest": digest, "now": now})
        if row is None:
            return None
        token = IssuedToken(client_id=row["client_id"],
                            scopes=frozenset(row["token_scopes"].split()),
                            expires_at=row["token_expires_at"])
        return token, self._client(row)

    def purge_tokens(self, now: float) -> int:
        """Delete expired issued tokens and authorization states; return how many tokens."""
        # RETURNING counts what this transaction deleted; a count read before the delete
        # would make it a read-then-write, which SQLite fails at once under a writer.
        with self._tx() as tx:
            deleted = tx.all("DELETE FROM issued_tokens WHERE expires_at <= :now "
                             "RETURNING digest", {"now": now})
            tx.execute("DELETE FROM auth_states WHERE expires_at <= :now", {"now": now})
        if deleted:
            log.info("purged %d expired issued tokens", len(deleted))
        return len(deleted)

    # --- seller authorization states ----------------------------------------------------

    def save_auth_state(self, digest: str, seller: str, expires_at: float) -> None:
        """Remember that the ``state`` with this digest was issued for ``seller``."""
        with self._tx() as tx:
            tx.execute("INSERT INTO auth_states (digest, seller, expires_at) "
                       "VALUES (:digest, :seller, :expires)",
                       {"digest": digest, "seller": seller, "expires": expires_at})

    def take_auth_state(self, digest: str, now: float) -> tuple[str, float] | None:
        """Consume a state (single use); return (seller, expiry) if it was valid."""
        with self._tx() as tx:
            row = tx.one("DELETE FROM auth_states WHERE digest = :digest "
                         "RETURNING seller, expires_at", {"digest": digest})
        if row is None or row["expires_at"] <= now:
            return None
        return row["seller"], float(row["expires_at"])

    # --- usage --------------------------------------------------------------------------

    def add_usage(self, counts: Mapping[tuple[str, int], int],
                  days: Mapping[tuple[str, str, int], DayTally] | None = None) -> None:
        """Add call counts per (client id, hour since the epoch), and tallies per (client id,
        route, day since the epoch), to what is stored: every instance's flush adds up.

        Rows are written in key order, so that two instances flushing the same keys at once
        lock them in the same order on PostgreSQL (no deadlock).
        """
        if not counts and not days:
            return
        spans: dict[tuple[str, str], DayTally] = {}
        for (client_id, route, _day), tally in sorted((days or {}).items()):
            span = spans.get((client_id, route))
            spans[(client_id, route)] = span.plus(tally) if span else tally
        with self._tx() as tx:
            for (client_id, hour), calls in sorted(counts.items()):
                tx.execute("INSERT INTO usage (client_id, hour, calls) "
                           "VALUES (:client, :hour, :calls) ON CONFLICT (client_id, hour) "
                           "DO UPDATE SET calls = usage.calls + excluded.calls",
                           {"client": client_id, "hour": hour, "calls": calls})
            for (client_id, route, day), tally in sorted((days or {}).items()):
                tx.execute("INSERT INTO usage_days (client_id, route, day, calls, errors) "
                           "VALUES (:client, :route, :day, :calls, :errors) "
                           "ON CONFLICT (client_id, route, day) DO UPDATE SET "
                           "calls = usage_days.calls + excluded.calls, "
                           "errors = usage_days.errors + excluded.errors",
                           {"client": client_id, "route": route, "day": day,
                            "calls": tally.calls, "errors": tally.errors})
            for (client_id, route), span in sorted(spans.items()):
                # CASE rather than MIN/MAX of two values: LEAST in PostgreSQL, min in SQLite.
                tx.execute("INSERT INTO usage_routes (client_id, route, first_at, last_at) "
                           "VALUES (:client, :route, :first, :last) "
                           "ON CONFLICT (client_id, route) DO UPDATE SET "
                           "first_at = CASE WHEN excluded.first_at < usage_routes.first_at "
                           "THEN excluded.first_at ELSE usage_routes.first_at END, "
                           "last_at = CASE WHEN excluded.last_at > usage_routes.last_at "
                           "THEN excluded.last_at ELSE usage_routes.last_at END",
                           {"client": client_id, "route": route, "first": span.first_at,
                            "last": span.last_at})

    def usage_since(self, hour: int) -> dict[str, int]:
        """Return calls per client from ``hour`` (hours since the epoch) on."""
        with self._tx() as tx:
            rows = tx.all("SELECT client_id, SUM(calls) AS calls FROM usage WHERE hour >= :hour "
                          "GROUP BY client_id ORDER BY client_id", {"hour": hour})
        return {row["client_id"]: int(row["calls"]) for row in rows}

    def usage_by_route(self, since_day: int) -> list[RouteUsage]:
        """Return every client's routes (first and last call) with their days from
        ``since_day`` (days since the epoch) on, by client and route."""
        with self._tx() as tx:
            spans = tx.all("SELECT client_id, route, first_at, last_at FROM usage_routes "
                           "ORDER BY client_id, route")
            rows = tx.all("SELECT client_id, route, day, calls, errors FROM usage_days "
                          "WHERE day >= :day", {"day": since_day})
        found = {(span["client_id"], span["route"]): RouteUsage(
            span["client_id"], span["route"], float(span["first_at"]), float(span["last_at"]))
            for span in spans}
        for row in rows:
            usage = found.get((row["client_id"], row["route"]))
            if usage is not None:  # (purged on day boundaries, so a kept day has its route)
                usage.days[int(row["day"])] = (int(row["calls"]), int(row["errors"]))
        return list(found.values())

    def purge_usage(self, before: float) -> int:
        """Delete the usage of the UTC days before the one holding ``before`` (epoch
        seconds): their daily and hourly counts, and the routes last called then; return
        how many daily rows went."""
        day = int(before // DAY_S)
        with self._tx() as tx:
            deleted = tx.all("DELETE FROM usage_days WHERE day < :day RETURNING day",
                             {"day": day})
            tx.execute("DELETE FROM usage WHERE hour < :hour", {"hour": day * 24})
            # On a day boundary too: a route with a day row kept keeps its first/last call.
            tx.execute("DELETE FROM usage_routes WHERE last_at < :start",
                       {"start": day * DAY_S})
        if deleted:
            log.info("purged %d daily usage rows past the retention", len(deleted))
        return len(deleted)


def _token_expiry(found: tuple[IssuedToken, Client]) -> float:
    return found[0].expires_at


def dump_rows(store: SqlStore, tables: Iterable[str]) -> str:
    """Return every row of ``tables`` as text (what a database dump would show)."""
    lines = []
    with store.backend.transaction() as tx:
        for table in tables:
            for row in tx.all(f"SELECT * FROM {table}"):  # noqa: S608 (our own table names)
                lines.append(f"{table}: {json.dumps(dict(row), default=str)}")
    return "\n".join(lines)

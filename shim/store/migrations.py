"""The database schema, as numbered migrations that run once each, in order.

The DDL is written once for both backends: SQLite accepts PostgreSQL's type names
(DOUBLE PRECISION, BOOLEAN, BIGINT) with the matching affinities.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "apps, sellers, clients, issued tokens, authorization states, usage", (
        """CREATE TABLE apps (
            app_key TEXT PRIMARY KEY,
            app_secret_enc TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE sellers (
            name TEXT PRIMARY KEY,
            store_id TEXT NOT NULL,
            region TEXT NOT NULL,
            app_key TEXT,
            access_token_enc TEXT,
            refresh_token_enc TEXT,
            access_expires_at DOUBLE PRECISION,
            refresh_expires_at DOUBLE PRECISION,
            account TEXT,
            country TEXT,
            user_info TEXT NOT NULL DEFAULT '[]',
            generation BIGINT NOT NULL DEFAULT 0,
            needs_reauth BOOLEAN NOT NULL DEFAULT FALSE,
            reauth_reason TEXT,
            last_refresh_at DOUBLE PRECISION,
            last_refresh_result TEXT,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE clients (
            client_id TEXT PRIMARY KEY,
            secret_digest TEXT NOT NULL,
            scopes TEXT NOT NULL,
            seller TEXT NOT NULL REFERENCES sellers (name),
            enabled BOOLEAN NOT NULL DEFAULT TRUE,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE issued_tokens (
            digest TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            scopes TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX issued_tokens_expiry ON issued_tokens (expires_at)",
        """CREATE TABLE auth_states (
            digest TEXT PRIMARY KEY,
            seller TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE usage (
            client_id TEXT NOT NULL,
            hour BIGINT NOT NULL,
            calls BIGINT NOT NULL,
            PRIMARY KEY (client_id, hour)
        )""",
        """CREATE TABLE refresh_log (
            seller TEXT NOT NULL,
            from_generation BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            result TEXT NOT NULL
        )""",
    )),
    (2, "daily usage per client and route (the retirement planner)", (
        # One row per client, route and UTC day: calls and error answers (4xx/5xx), added to
        # by every instance's flush. Days since the epoch, like ``usage.hour`` is hours.
        """CREATE TABLE usage_days (
            client_id TEXT NOT NULL,
            route TEXT NOT NULL,
            day BIGINT NOT NULL,
            calls BIGINT NOT NULL,
            errors BIGINT NOT NULL,
            PRIMARY KEY (client_id, route, day)
        )""",
        "CREATE INDEX usage_days_day ON usage_days (day)",
        # First and last call per client and route, widened by each flush.
        """CREATE TABLE usage_routes (
            client_id TEXT NOT NULL,
            route TEXT NOT NULL,
            first_at DOUBLE PRECISION NOT NULL,
            last_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (client_id, route)
        )""",
    )),
    (3, "token cache instances and revocation acknowledgements (PostgreSQL)", (
        # Read and written only on PostgreSQL (shim/store/tokencache.py); harmless in SQLite.
        """CREATE TABLE token_cache_instances (
            instance TEXT PRIMARY KEY,
            registered_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL,
            evicted BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        """CREATE TABLE token_cache_acks (
            revocation TEXT NOT NULL,
            instance TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (revocation, instance)
        )""",
    )),
)

LATEST = MIGRATIONS[-1][0]

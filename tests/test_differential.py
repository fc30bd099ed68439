"""The differential corpus (``tests/differential.py``): every case's legacy answer is unchanged.

Each case runs in process through the Flask test client, on a fresh app (no case learns from
the one before) sharing one store, against a canned platform on a real socket; what is
compared is what a client gets: status, ETag and the body bytes.
"""

from __future__ import annotations

import json
import os

import differential
import pytest

from shim import scopes
from shim.app import create_app
from shim.services import get_services
from shim.serving import LocalServer
from shim.store import open_store


@pytest.fixture(scope="module")
def corpus_shim(make_settings):
    """Return ``run(case)``: runs a case in process with the case's clock.

    One app serves every case but those of ``GET /v1/pickup-locations/{id}``: each of those
    gets a fresh app, since the shim learns there that the platform lacks an API. The
    circuit breakers never open (the cases are independent calls, not a run of failures).
    """
    platform = differential.CannedPlatform()
    clock = {"now": differential.NOW_MS / 1000}
    with LocalServer(platform) as server:
        settings = make_settings(server.base_url, rate_limit_per_second=1_000_000,
                                 pickup_jobs_rate_limit_per_second=1_000_000,
                                 breaker_failures=1_000_000_000)
        store = open_store(settings)
        token = differential.issue_token(store, "full", frozenset(scopes.ALL))
        shared = create_app(settings, store=store, clock=lambda: clock["now"])

        def run(case: differential.Case) -> differential.Outcome:
            clock["now"] = case.now_ms / 1000
            if not case.request["path"].startswith("/v1/pickup-locations/"):
                return differential.run_case(shared, platform, token, case)
            app = create_app(settings, store=store, clock=lambda: clock["now"])
            try:
                return differential.run_case(app, platform, token, case)
            finally:
                get_services(app).close()

        yield run
        get_services(shared).close()
        store.close()


def test_corpus_answers_are_unchanged(corpus_shim):
    """Every case gets the status, ETag, body bytes and platform calls recorded at 2916c66."""
    outcomes = {case.id: corpus_shim(case).as_json() for case in differential.all_cases()}
    if os.environ.get("DIFFERENTIAL_RECORD") == "1":
        differential.RECORDED.write_text("{\n" + ",\n".join(
            f"{json.dumps(case_id)}: {json.dumps(outcome)}" for case_id, outcome in
            outcomes.items()) + "\n}\n")
        pytest.skip(f"recorded {len(outcomes)} cases")
    recorded = json.loads(differential.RECORDED.read_text())
    assert sorted(outcomes) == sorted(recorded), "the corpus changed: re-record it"
    changed = {case_id: {"was": recorded[case_id], "now": outcome}
               for case_id, outcome in outcomes.items() if outcome != recorded[case_id]}
    assert not changed, json.dumps(dict(list(changed.items())[:5]), indent=1)

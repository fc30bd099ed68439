"""Killing refreshing processes (SIGKILL) at random moments never loses the seller.

After every kill: the stored pair is whole and its access token works (the sandbox, like
most OAuth servers, keeps an access token valid until its own expiry); when a kill lost a
refresh answer and the platform had rotated the refresh token, the seller is explicitly
marked for re-authorization (and keeps being served until the access token expires); no two
refreshes were committed for one token generation; and every refresh the platform performed
but the store does not hold is explained by a kill (the only way to lose an answer).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from shim.authorization import grant_from
from shim.record.settings import APP_KEY, STORE_ID
from shim.upstream.client import LazadaClient

ROUNDS = int(os.environ.get("SHIM_CRASH_ROUNDS", "25"))
WORKER = Path(__file__).with_name("refresh_worker.py")


def start_workers(processes, count, db_path, sandbox, env):
    workers = []
    for _ in range(count):
        process = processes.start(
            [sys.executable, str(WORKER), db_path, sandbox.api_url, APP_KEY],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        workers.append(process)
    for process in workers:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return workers


def kill(workers):
    for process in workers:
        process.send_signal(signal.SIGKILL)
    for process in workers:
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


@pytest.mark.slow
def test_sigkill_during_refresh_never_loses_the_seller(db_settings, db_store, sandbox,
                                                       test_secrets, processes):
    rng = random.Random(20261126)
    db_path = db_settings.database_url.removeprefix("sqlite:///")
    env = {**os.environ, "WORKER_ENCRYPTION_KEY": db_settings.encryption_key,
           "WORKER_APP_SECRET": test_secrets.app_secret}
    # Widen both windows a kill can land in: before the platform acts, and after it acted
    # but before its answer (and so the commit) arrives.
    for kind in ("latency", "sleep"):
        requests.post(f"{sandbox.base_url}/_sandbox/faults",
                      json={"api": "/auth/token/refresh", "kind": kind, "rate": 0.5,
                            "latency_ms": 15}, timeout=5).raise_for_status()
    client = LazadaClient(app_key=APP_KEY, app_secret=test_secrets.app_secret,
                          api_url=sandbox.api_url, auth_url=sandbox.api_url, read_retries=0)
    kills = reauthorizations = 0
    for _ in range(ROUNDS):
        workers = start_workers(processes, 2, db_path, sandbox, env)
        time.sleep(rng.uniform(0.05, 0.4))
        kill(workers)
        kills += 1
        seller = db_store.get_seller("main")  # readable: no torn row, tokens decrypt
        # the stored access token still works, even when a lost answer cost the refresh token
        assert sandbox.state.store_for_access_token(seller.access_token) == STORE_ID
        if seller.needs_reauth:
            reauthorizations += 1
            answer = client.create_token(sandbox.state.issue_code(STORE_ID))
            db_store.store_grant("main", grant_from(answer, time.time()), result="authorized")
    log = db_store.refresh_log("main")
    committed = [entry["from_generation"] for entry in log if entry["result"] == "refreshed"]
    assert committed, "the workers never refreshed: the test proved nothing"
    duplicates = [g for g, n in Counter(committed).items() if n > 1]
    assert duplicates == []  # never two refreshes for one expiry
    performed = [e for e in sandbox.state.ledger() if e["api"] == "/auth/token/refresh"
                 and e["code"] == "0"]
    lost = len(performed) - len(committed)
    assert 0 <= lost <= kills
    # a lost answer is the only way to need re-authorization here
    assert reauthorizations <= lost
    client.close()
    print(f"\n{ROUNDS} rounds: {len(committed)} refreshes committed, {len(performed)} performed "
          f"by the platform, {lost} lost to kills, {reauthorizations} re-authorizations")

"""``redmart-shim usage``: the retirement planner's table and JSON, run as an operator runs it
(a subprocess on the database a shim counted into)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shim.usage import DAY_S, UsageRecorder

NOW = time.time()


def run(env, *args):
    return subprocess.run([sys.executable, "-m", "shim", "usage", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def counted(db_store):
    """The test database after a month of calls: ``full`` still calls every day (now and
    then with an error); ``reader`` last called 20 days ago."""
    clock = [NOW]
    recorder = UsageRecorder(db_store, clock=lambda: clock[0])
    for days_ago in range(30):
        clock[0] = NOW - days_ago * DAY_S
        recorder.count("full", "GET /v1/products")
        recorder.count("full", "GET /v1/products", error=days_ago % 10 == 0)
    clock[0] = NOW - 20 * DAY_S
    recorder.count("reader", "GET /v1/pickup-jobs")
    clock[0] = NOW - 45 * DAY_S
    recorder.count("reader", "GET /v1/pickup-jobs")  # before the window: only its first call
    recorder.flush()
    return db_store


def test_the_table_shows_calls_errors_and_who_is_ready_to_retire(counted, serve_environment):
    result = run(serve_environment())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "no call for 14 days" in lines[0]
    assert lines[1].split() == ["CLIENT_ID", "ROUTE", "CALLS", "ERRORS", "FIRST_CALL",
                                "LAST_CALL", "IDLE_DAYS", "STATUS"]
    rows = {tuple(line.split()[:2]): line for line in lines[2:]}
    assert rows[("full", "(all)")].split()[2:5] == ["60", "3", "(5%)"]
    assert rows[("full", "(all)")].endswith("in use")
    assert rows[("full", "GET")].split()[2:4] == ["/v1/products", "60"]
    assert rows[("reader", "(all)")].split()[2] == "1"
    assert rows[("reader", "(all)")].split()[-4:] == ["20", "ready", "to", "retire"]


def test_json_has_every_day_of_the_window(counted, serve_environment):
    result = run(serve_environment(), "--since", "7d", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["since_days"], document["retire_after_days"]) == (7, 14)
    clients = {client["client_id"]: client for client in document["clients"]}
    full = clients["full"]
    assert (full["calls"], full["errors"], full["ready_to_retire"]) == (14, 1, False)
    [route] = full["routes"]
    assert route["route"] == "GET /v1/products"
    assert [day["calls"] for day in route["daily"]] == [2] * 7
    assert route["daily"][-1] == {"date": document["to"], "calls": 2, "errors": 1}
    reader = clients["reader"]
    assert (reader["calls"], reader["idle_days"], reader["ready_to_retire"]) == (0, 20, True)
    assert reader["first_call"] < reader["last_call"] < full["last_call"]


def test_the_retirement_threshold_is_a_setting(counted, serve_environment):
    document = json.loads(run(serve_environment(SHIM_RETIRE_AFTER_DAYS="30"), "--json").stdout)
    assert {c["client_id"]: c["ready_to_retire"] for c in document["clients"]} == {
        "full": False, "reader": False}


def test_a_bad_window_or_no_database_is_a_usage_error(serve_environment):
    bad = run(serve_environment(), "--since", "a month")
    assert bad.returncode == 2 and "number of days" in bad.stderr
    env = serve_environment()
    del env["SHIM_DATABASE_URL"]
    declarative = run(env)
    assert declarative.returncode == 2 and "kept in the database" in declarative.stderr


def test_the_readmes_block_runs_as_written(counted, serve_environment):
    """The "Retiring the shim" block, each line through a shell with the console script on
    PATH, as an operator types it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Retiring the shim", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert [line.split()[:2] for line in lines] == [["redmart-shim", "usage"]] * 2
    env = serve_environment()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    table, as_json = (subprocess.run(["bash", "-c", line], env=env, capture_output=True,
                                     text=True, timeout=60) for line in lines)
    assert table.returncode == 0 and as_json.returncode == 0, (table.stderr, as_json.stderr)
    assert "ready to retire" in table.stdout
    document = json.loads(as_json.stdout)
    assert document["since_days"] == 7
    assert {client["client_id"] for client in document["clients"]} >= {"full", "reader"}

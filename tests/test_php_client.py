"""A legacy client in the style of the real ones, run whole against the shim on the sandbox.

``tests/php/redmart_sync.php`` is a cron-driven WooCommerce stock sync written the way the
public PHP integrations of the legacy API were (Debian's php-cli and php-curl): a token file
read back with a cached ``filesize()``, hand-split headers, the ETag echoed verbatim, the
quantity as a JSON string, an unencoded ``scope``, re-tokening only on ``invalid_token``,
and 429s skipped until the next cron pass. It runs against ``redmart-shim serve`` (gunicorn)
with the real limit of 10 calls a second, starting from the token Kong last issued; then the
sandbox's ledger must hold every update the client was told succeeded, once, and no other.

php is installed by ``scripts/ensure-php`` when missing; if it still cannot be found the
test fails: a client test that skips proves nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from processes import Processes
from served import clean_env, free_port, running

from shim import credentials
from shim.record.settings import STORE_ID

ROOT = Path(__file__).resolve().parent.parent
ENSURE_PHP = ROOT / "scripts" / "ensure-php"
CLIENT = Path(__file__).resolve().parent / "php" / "redmart_sync.php"
PRODUCTS = 200
# Each pass gets through what the rate limit admits in the windows it spans. A pass refused
# everywhere lasts well under a second behind nginx (a 429 costs under 1 ms), so several can
# fall in one window: passes are bounded by time, not by count.
SYNC_DEADLINE_S = 180
UPDATE = "/rss/stockLot/update"


def _php_with_curl(processes: Processes) -> str | None:
    path = shutil.which("php")
    if path is None:
        return None
    probe = processes.run([path, "-r", "exit(function_exists('curl_init') ? 0 : 1);"],
                          timeout=30)
    return path if probe.returncode == 0 else None


@pytest.fixture
def php(processes) -> str:
    path = _php_with_curl(processes)
    if path is None:
        processes.run([str(ENSURE_PHP)], timeout=900, stdout=subprocess.DEVNULL)
        path = _php_with_curl(processes)
    if path is None:
        pytest.fail("Debian's php-cli and php-curl are not installed and scripts/ensure-php "
                    "could not install them")
    return path


@pytest.fixture
def shim_url(write_declarative_config, sandbox, test_secrets, tmp_path):
    """``redmart-shim serve`` (gunicorn, production settings, 10 calls/s) on the sandbox."""
    config = tmp_path / "shim.toml"
    write_declarative_config(config, sandbox.api_url)
    port = free_port()
    env = clean_env(SHIM_APP_SECRET=test_secrets.app_secret,
                    SHIM_MAIN_ACCESS_TOKEN=test_secrets.access_token)
    with running(["serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"], env, port,
                 tmp_path / "shim.log") as base_url:
        yield base_url


def stock_updates(entries: list[dict]) -> list[dict]:
    return [entry for entry in entries if entry["api"] == UPDATE and entry["source"] == "api"]


def test_a_cron_sync_of_200_products_sees_429s_and_loses_no_update(ledger, php, sandbox, shim_url,
                                                                  test_secrets, tmp_path,
                                                                  processes):
    catalog = sandbox.state.catalog(STORE_ID)
    products = [product for product in catalog.products if product["pickupLocations"]]
    inventory = {}
    for index, product in enumerate(products[:PRODUCTS]):
        lot = catalog.stock[(product["rpc"], product["pickupLocations"][0]["id"])]
        inventory[str(product["rpc"])] = lot["quantityAtPickupLocation"] + 1 + index % 7
    assert len(inventory) == PRODUCTS
    state_file, token_file = tmp_path / "sync.json", tmp_path / "redmart_token.txt"
    state_file.write_text(json.dumps({"inventory": inventory}))
    token_file.write_text(credentials.new_token())  # the last token Kong issued: now unknown
    start = len(ledger(sandbox))

    passes: list[list[dict]] = []
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while time.monotonic() < deadline:
        run = processes.run([php, str(CLIENT), shim_url, "full", test_secrets.client_secret,
                             str(token_file), str(state_file)],
                            capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stderr == "", run.stderr  # no PHP warning either
        passes.append([json.loads(line) for line in run.stdout.splitlines()])
        if json.loads(state_file.read_text())["synced"] == inventory:
            break
    events = [event for one_pass in passes for event in one_pass]
    told_ok = [event for event in events if event["event"] == "updated"]

    # The stale token was refused once, with invalid_token; the one fetched instead, read
    # back at the old token's (cached) length, served every later call of every pass.
    assert [event["event"] for event in events if event["event"].startswith("token")] \
        == ["token"]
    assert passes[0][0] == {"event": "token"}
    # The burst went past 10 calls a second, and the client was told so.
    skipped = [event for event in events if event["event"] == "skipped"]
    assert skipped and {event["status"] for event in skipped} == {429}
    # Every product ended synced, each told 200 exactly once, at the quantity it sent.
    assert sorted(event["rpc"] for event in told_ok) == sorted(int(rpc) for rpc in inventory)
    assert all(event["quantity"] == inventory[str(event["rpc"])] for event in told_ok)

    # The ledger: each update told 200 landed once, and nothing else was written.
    updates = stock_updates(ledger(sandbox, start))
    assert all(entry["applied"] for entry in updates)
    landed = Counter((int(entry["params"]["productId"]), entry["params"]["pickupLocationId"],
                      json.loads(entry["params"]["stockLotUpdateDTO"])
                      ["quantityAtPickupLocation"]) for entry in updates)
    assert landed == Counter((event["rpc"], event["location"], event["quantity"])
                             for event in told_ok)
    for event in told_ok:
        lot = sandbox.state.get_lot(STORE_ID, event["rpc"], event["location"])
        assert lot["quantityAtPickupLocation"] == event["quantity"]

"""``redmart-shim serve`` as operators run it: every line it prints is a JSON log line."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from shim import errors
from shim.record.settings import STORE_ID

PRODUCT = "/v1/products/100150"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redmart_shim() -> list[str]:
    """The installed console script, as an operator runs it."""
    script = Path(sys.executable).with_name("redmart-shim")
    return [str(script)] if script.exists() else [shutil.which("redmart-shim") or "redmart-shim"]


class Served:
    """A running ``redmart-shim serve`` process and the file its output goes to."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, output: Path) -> None:
        self.process, self.port, self.output = process, port, output
        self.base_url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once /healthz answers; fail with the output if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.output.read_text()
            try:
                if requests.get(self.base_url + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:  # not listening yet, or no worker yet
                pass
            assert time.monotonic() < deadline, self.output.read_text()
            time.sleep(0.1)

    def stop(self) -> list[str]:
        """SIGTERM (as a supervisor stops it), wait, and return every line it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
        return self.output.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def served(db_settings, serve_environment, db_store, tmp_path, processes):
    """A real ``redmart-shim serve`` on a free port, stopped in cleanup whatever happens."""
    port = free_port()
    output = tmp_path / "serve.out"
    with output.open("wb") as sink:
        process = processes.start(
            [*redmart_shim(), "serve", "--bind", f"127.0.0.1:{port}"],
            env=serve_environment(
                SHIM_OPERATOR_TOKEN=db_settings.operator_token, SHIM_BACKGROUND_TASKS="false",
                SHIM_READ_RETRIES="0", SHIM_LOG_LEVEL="info", PYTHONUNBUFFERED="1"),
            stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)  # gunicorn's workers are killed with it if it hangs
    server = Served(process, port, output)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_serve_prints_only_json_lines_with_request_ids(served, sandbox, test_secrets):
    base = served.base_url
    session = requests.Session()
    token = session.post(base + "/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret}).json()["access_token"]
    good = session.get(base + PRODUCT, headers={"Authorization": f"Bearer {token}",
                                                "X-Request-Id": "good-call"}, timeout=10)
    assert good.status_code == 200, good.text
    bad = session.get(base + PRODUCT, headers={"Authorization": "Bearer not-a-token",
                                               "X-Request-Id": "bad-token"}, timeout=10)
    assert bad.status_code == 401
    # The platform refuses the seller's tokens: the refresh fails, the seller must re-authorize.
    sandbox.state.expire(STORE_ID, access=True, refresh=True)
    reauth = session.get(base + PRODUCT, headers={"Authorization": f"Bearer {token}",
                                                  "X-Request-Id": "reauthorize"}, timeout=10)
    assert reauth.status_code == 503
    assert reauth.json()["title"] == errors.REAUTHORIZE_TITLE
    session.close()
    # gunicorn decodes %0a in the path: it must not start a forged line of its own.
    forged = '{"level": "INFO", "message": "forged"}'
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw:
        raw.sendall(b"GET /healthz%0a" + forged.replace(" ", "%20").replace('"', "%22")
                    .encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while raw.recv(65536):
            pass

    lines = served.stop()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n" + "\n".join(lines))
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= record.keys(), record
    assert not [r for r in records if r["message"] == "forged"]
    loggers = {record["logger"] for record in records}
    assert {"gunicorn.error", "gunicorn.access", "shim.requests"} <= loggers, loggers
    # One request line from the shim and one access line from gunicorn per call, each with
    # the call's request id; the shim's carries the platform's request ids.
    for request_id, status in (("good-call", 200), ("bad-token", 401), ("reauthorize", 503)):
        ours = [r for r in records if r["logger"] == "shim.requests"
                and r["request_id"] == request_id]
        access = [r for r in records if r["logger"] == "gunicorn.access"
                  and r["request_id"] == request_id]
        assert [r["status"] for r in ours] == [status], records
        assert [(r["status"], r["path"], r["level"]) for r in access] == [
            (status, PRODUCT, "INFO")]
        if request_id != "bad-token":  # the platform answered these
            assert ours[0]["upstream_request_ids"], ours
    requests_lines = [r for r in records if r["logger"] in ("shim.requests", "gunicorn.access")]
    assert all(r["request_id"] for r in requests_lines
               if r.get("path") != "/healthz" and not r.get("path", "").startswith("/healthz\n"))
    forged_access = [r for r in records if r["logger"] == "gunicorn.access"
                     and r["path"].startswith("/healthz\n")]
    assert len(forged_access) == 1 and "forged" in forged_access[0]["message"]
    # The re-authorization ERROR operators alert on: its level, its request and the refusal.
    refused = [r for r in records if "must authorize the shim again" in r["message"]]
    assert {(r["level"], r["request_id"]) for r in refused} == {("ERROR", "reauthorize")}
    lifecycle = [r for r in refused if r["logger"] == "shim.token_lifecycle"]
    assert len(lifecycle) == 1 and lifecycle[0]["upstream_request_ids"]
    # gunicorn's own lines: the master's start and the worker's boot, at INFO.
    assert any(r["logger"] == "gunicorn.error" and r["level"] == "INFO"
               and r["message"].startswith("Listening at") for r in records)

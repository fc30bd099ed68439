"""The README's operator path, run as written against a real ``redmart-shim sandbox``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "## The operator path, tried on the sandbox"
SHIM_ADDRESS = "127.0.0.1:8080"


def operator_block() -> str:
    """Return the shell block under the operator-path heading."""
    section = README.read_text(encoding="utf-8").split(HEADING, 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "no sh block under " + HEADING
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment() -> dict[str, str]:
    """A shell like the operator's: the console script on PATH, no SHIM_* of ours."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SHIM_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture
def sandbox_process(tmp_path, processes):
    """``redmart-shim sandbox --credentials-file sandbox.env`` as the README starts it (any
    free port: the exports carry it); returns what it printed."""
    credentials = tmp_path / "sandbox.env"
    process = processes.start(
        ["redmart-shim", "sandbox", "--port", "0", "--credentials-file", "sandbox.env"],
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    printed = []
    while not printed or printed[-1].startswith("#"):
        line = process.stdout.readline()
        assert line, "the sandbox stopped"
        printed.append(line)
    printed += [process.stdout.readline() for _ in range(3)]
    assert credentials.exists()
    return "".join(printed)


def test_the_sandbox_prints_the_exports_the_shim_needs(sandbox_process, tmp_path):
    exports = dict(re.findall(r"^export (SHIM_\w+)=(\S+)$", sandbox_process, re.M))
    assert set(exports) == {"SHIM_APP_KEY", "SHIM_API_URL", "SHIM_AUTH_URL",
                            "SHIM_AUTHORIZE_URL"}
    sandbox_url = exports["SHIM_API_URL"].removesuffix("/rest")
    assert exports["SHIM_AUTHORIZE_URL"] == sandbox_url + "/oauth/authorize"
    assert ". sandbox.env" in sandbox_process
    written = (tmp_path / "sandbox.env").read_text(encoding="utf-8")
    names = re.findall(r"^export (SHIM_\w+)=", written, re.M)
    assert names == ["SHIM_APP_KEY", "SHIM_APP_SECRET", "SHIM_API_URL", "SHIM_AUTH_URL",
                     "SHIM_AUTHORIZE_URL", "SHIM_MAIN_ACCESS_TOKEN", "SHIM_MAIN_REFRESH_TOKEN"]
    # Each is a setting the shim reads, or a name the README's declarative file reads.
    from shim import config

    declared = {declared.env for declared in config.DECLARED}
    assert set(names) - declared == {"SHIM_MAIN_ACCESS_TOKEN", "SHIM_MAIN_REFRESH_TOKEN"}
    assert 'env = "SHIM_MAIN_ACCESS_TOKEN"' in README.read_text(encoding="utf-8")
    # The secrets stay in the file.
    secret = re.search(r"^export SHIM_APP_SECRET=(\S+)$", written, re.M).group(1)
    assert secret not in sandbox_process


def test_the_operator_path_runs_as_written_against_the_sandbox(sandbox_process, tmp_path,
                                                              processes):
    script = operator_block()
    assert SHIM_ADDRESS in script
    port = free_port()
    script = script.replace(SHIM_ADDRESS, f"127.0.0.1:{port}")
    # Its own process group: cleanup kills the serve it starts too, whatever fails.
    shell = processes.start(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    out, err = shell.communicate(timeout=180)
    log = tmp_path / "shim.log"
    shim_log = log.read_text(encoding="utf-8") if log.exists() else ""
    assert shell.returncode == 0, err + shim_log
    # the seller authorized through the consent page, then a legacy call and the page
    assert "seller main authorized" in out
    assert re.search(r'\{"page":1,"pageSize":1,"items":\[\{"id":"\d+"', out), out
    assert 'data-seller="main"' in out and 'data-client="acme-erp"' in out
    assert '<span class="ok">no</span>' in out  # no re-authorization needed
    # serve wrote JSON lines only, the legacy call's among them with its request id
    records = [json.loads(line) for line in shim_log.splitlines()]
    calls = [r for r in records if r["logger"] == "shim.requests"
             and r.get("route") == "/v1/pickup-locations"]
    assert len(calls) == 1 and calls[0]["status"] == 200 and calls[0]["request_id"]

"""The image, built and run for real: scripts/build-image on this machine's Docker engine (no
registry needed), then the container against the sandbox on the host, as an operator runs it.

The engine is started when none is running (scripts/ensure-docker); if it cannot be had, the
tests fail and say why. The container shares the host's network, so it reaches the sandbox
on 127.0.0.1 and the tests reach it there too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from processes import Processes, default_sigint
from test_readme import run_walkthrough, walkthrough

from shim import credentials, openapi
from shim.sandbox import SandboxServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# One tag per checkout: worktrees sharing an engine never run each other's image.
TAG = "redmart-shim:test-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
IMAGE_UID = 10001  # the Dockerfile's USER
BUILD_TIMEOUT_S = 1800  # a clean machine: Debian's packages, the wheels, then the build
SLOW_MS = 2000
STOP_GRACE_S = 30

def docker(processes: Processes, *args: str, timeout: float = 60,
           env: dict[str, str] | None = None) -> str:
    """Run one docker command; return its output, or fail with it."""
    result = processes.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                           env=env)
    assert result.returncode == 0, f"docker {args[0]}: {result.stdout}{result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> str:
    """Start the engine if needed, build the image, report its size; return its tag."""
    engine = subprocess.run([str(ROOT / "scripts" / "ensure-docker")], capture_output=True,
                            text=True, timeout=600, check=False, preexec_fn=default_sigint)
    if engine.returncode != 0:
        pytest.fail(f"no Docker engine: {engine.stderr.strip()}", pytrace=False)
    started = time.monotonic()
    built = subprocess.run([str(ROOT / "scripts" / "build-image"), TAG], capture_output=True,
                           text=True, timeout=BUILD_TIMEOUT_S, check=False,
                           preexec_fn=default_sigint)
    assert built.returncode == 0, built.stderr[-4000:]
    assert built.stdout.strip() == TAG
    size = int(subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", TAG],
                              capture_output=True, text=True, timeout=60, check=True,
                              preexec_fn=default_sigint).stdout)
    # Shown in every run, past pytest's output capture.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\nimage {TAG}: {size / 1e6:.0f} MB "
                            f"(built in {time.monotonic() - started:.0f} s)")
    return TAG


@dataclass
class Container:
    """A running container of the image and where it answers."""

    name: str
    base_url: str
    processes: Processes

    def inspect(self, template: str) -> Any:
        """Return a field of ``docker inspect``, decoded from JSON."""
        return json.loads(docker(self.processes, "inspect", "--format",
                                 "{{json " + template + "}}", self.name))

    def logs(self) -> str:
        """Return everything the container wrote."""
        result = self.processes.run(["docker", "logs", self.name], capture_output=True,
                                    text=True, timeout=60)
        return result.stdout + result.stderr


def demo_client() -> tuple[str, str]:
    """Return the client id and secret the README walkthrough uses."""
    script = walkthrough()
    return (re.search(r"client_id=(\S+)", script).group(1),
            re.search(r"client_secret=(\S+)", script).group(1))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def container(run_container) -> Iterator[Container]:
    """The image running with a TOML file and secrets from the environment, as the README
    shows, against the sandbox; removed when the test ends."""
    with run_container() as running:
        yield running


@pytest.fixture
def run_container(session_secrets, image: str, sandbox: SandboxServer, test_secrets,
                  tmp_path: Path, processes: Processes, write_declarative_config,
                  ) -> Callable[..., AbstractContextManager[Container]]:
    """Return ``run_container(**SHIM_variables)``: the ``container`` of the image with extra
    settings, healthy, removed when its block ends."""
    return partial(_run_container, session_secrets, image, sandbox, test_secrets, tmp_path,
                   processes, write_declarative_config)


@contextmanager
def _run_container(session_secrets, image: str, sandbox: SandboxServer, test_secrets,
                   tmp_path: Path, processes: Processes, write_declarative_config,
                   **variables: str) -> Iterator[Container]:
    client_id, client_secret = demo_client()
    config = tmp_path / "shim.toml"
    write_declarative_config(config, sandbox.api_url, client_id=client_id,
                             digest=credentials.hash_secret(client_secret))
    config.chmod(0o644)  # the container's user is not this one
    port = free_port()
    name = "redmart-shim-test-" + secrets.token_hex(4)
    # Secrets pass by name (-e NAME), so they never appear on a command line.
    env = {**os.environ, "SHIM_APP_SECRET": test_secrets.app_secret,
           "SHIM_MAIN_ACCESS_TOKEN": test_secrets.access_token}
    docker(processes, "run", "--detach", "--name", name, "--network", "host",
           "--volume", f"{config}:/etc/shim/shim.toml:ro",
           "--env", "SHIM_CONFIG=/etc/shim/shim.toml", "--env", "SHIM_APP_SECRET",
           "--env", "SHIM_MAIN_ACCESS_TOKEN", "--env", f"SHIM_BIND=127.0.0.1:{port}",
           *(f"--env={name}={value}" for name, value in variables.items()), image, env=env)
    running = Container(name=name, base_url=f"http://127.0.0.1:{port}", processes=processes)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert running.inspect(".State.Running"), running.logs()
            try:
                if requests.get(running.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # refused, or slow to answer while starting
                pass
            assert time.monotonic() < deadline, running.logs()
            time.sleep(0.2)
        yield running
        output = running.logs()
        leaked = [value for value in [*test_secrets.all(), *session_secrets] if value in output]
        assert leaked == [], "a secret in the container's output"
    finally:
        processes.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and its descendants, as the host sees them."""
    tree, index = [pid], 0
    while index < len(tree):
        children = Path(f"/proc/{tree[index]}/task/{tree[index]}/children").read_text().split()
        tree.extend(int(child) for child in children)
        index += 1
    return tree


def status_field(pid: int, field: str) -> list[str]:
    """Return a field of /proc/PID/status, split."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_it_serves_as_non_root_with_serve_as_pid_1_and_reports_healthy(
        container: Container) -> None:
    pid = container.inspect(".State.Pid")
    assert status_field(pid, "NSpid")[-1] == "1"  # start.sh exec'd: nothing between
    assert b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    tree = process_tree(pid)
    commands = b" ".join(Path(f"/proc/{member}/cmdline").read_bytes() for member in tree)
    assert b"gunicorn" in commands and b"nginx" in commands  # nginx in front of gunicorn
    assert len(tree) >= 5  # serve; gunicorn's master and worker; nginx's master and worker
    for member in tree:
        assert status_field(member, "Uid") == [str(IMAGE_UID)] * 4, member
        assert status_field(member, "Gid") == [str(IMAGE_UID)] * 4, member
    # The image's own HEALTHCHECK, on its own schedule (first probe after its interval).
    deadline = time.monotonic() + 90
    while (health := container.inspect(".State.Health"))["Status"] != "healthy":
        assert health["Status"] == "starting", health
        assert time.monotonic() < deadline, health
        time.sleep(1)
    assert health["Log"][-1]["ExitCode"] == 0


def test_the_readme_walkthrough_runs_against_the_container(container: Container,
                                                           processes: Processes) -> None:
    run_walkthrough(processes, container.base_url)


def test_docs_and_their_packaged_assets_come_through_the_front(container: Container) -> None:
    """/docs as shipped: Swagger UI's files are in the image's venv, and the page's policy
    headers pass nginx unchanged."""
    for path in ("/docs", *(f"/docs/{name}" for name in openapi.ASSETS)):
        answer = requests.get(container.base_url + path, timeout=10)
        assert answer.status_code == 200 and len(answer.content) > 100, path
        for name, value in openapi.PAGE_HEADERS.items():
            assert answer.headers[name] == value, (path, name)


def test_sigterm_lets_the_in_flight_request_finish(session_secrets, container: Container,
                                                   sandbox: SandboxServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker stop`` sends SIGTERM to serve (PID 1): nginx stops accepting, the slow call
    in flight gets its answer, and the container exits 0 long before the grace period."""
    client_id, client_secret = demo_client()
    with requests.Session() as session:
        token = session.post(container.base_url + "/oauth2/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret})
        assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    session_secrets.add(token.json()["access_token"])
    requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5, json={
        "api": "/rss/product/get", "kind": "latency", "times": 1,
        "latency_ms": SLOW_MS}).raise_for_status()

    # Know the slow call is in flight (waiting in the sandbox) before the signal.
    in_flight, pause = threading.Event(), sandbox.state.pause

    def pausing(ms: float) -> None:
        if ms:
            in_flight.set()
        pause(ms)

    monkeypatch.setattr(sandbox.state, "pause", pausing)

    def slow_get() -> tuple[int, dict[str, Any]]:
        answer = requests.get(container.base_url + "/v1/products/100150", headers=bearer,
                              timeout=30)
        return answer.status_code, answer.json()

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(slow_get)
        assert in_flight.wait(10)
        stopping = time.monotonic()
        docker(container.processes, "stop", "--time", str(STOP_GRACE_S), container.name,
               timeout=STOP_GRACE_S + 30)
        stopped_after = time.monotonic() - stopping
        status, body = slow.result(timeout=30)
    assert (status, body["rpc"]) == (200, 100150)
    assert container.inspect(".State.ExitCode") == 0  # not killed: it exited by itself
    assert stopped_after < STOP_GRACE_S / 2


def test_it_traces_and_serves_with_its_collector_down(session_secrets, run_container) -> None:
    """The image has the otel extra: with otlp_endpoint on a port nothing listens on, it
    starts, serves, tries to send its spans (and says it could not), and stops cleanly."""
    collector = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    with run_container(SHIM_OTLP_ENDPOINT=collector) as container:
        client_id, client_secret = demo_client()
        token = requests.post(container.base_url + "/oauth2/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret})
        assert token.status_code == 200, token.text
        session_secrets.add(token.json()["access_token"])
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        deadline = time.monotonic() + 60
        while "opentelemetry.exporter" not in container.logs():  # a batch is tried in 5 s
            answer = requests.get(container.base_url + "/v1/products/100150", headers=bearer,
                                  timeout=10)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() < deadline, container.logs()
            time.sleep(1)
        assert requests.get(container.base_url + "/healthz", timeout=10).status_code == 200
        docker(container.processes, "stop", "--time", str(STOP_GRACE_S), container.name,
               timeout=STOP_GRACE_S + 30)
        assert container.inspect(".State.ExitCode") == 0

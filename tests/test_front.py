"""``redmart-shim serve`` puts nginx in front of gunicorn: connections cost nothing until a
request is complete (shim/front.py).

Every test runs the real ``serve`` (nginx and gunicorn) on the test database, pointed at the
sandbox, and talks to it over real sockets.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests
from served import RawAnswer, exchange, free_port, running

from shim import config, errors
from shim import front as front_module
from shim.legacy.auth import token_rate_limited
from shim.legacy.ratelimit import RATE_LIMITED

PRODUCT = "/v1/products/100150"
PROMPT_S = 5.0  # a generous bound: without the front these calls never came back


@pytest.fixture
def front_env(serve_environment, db_store, tmp_path) -> Callable[..., dict[str, str]]:
    """The environment of a real serve on the seeded test database; temp files in tmp_path."""
    def build(**extra: str) -> dict[str, str]:
        return serve_environment(TMPDIR=str(tmp_path), SHIM_BACKGROUND_TASKS="false",
                                 SHIM_READ_RETRIES="0", SHIM_LOG_LEVEL="info",
                                 PYTHONUNBUFFERED="1", **extra)
    return build


@pytest.fixture
def front(front_env, tmp_path) -> Callable[..., Any]:
    """Start serve with extra settings; yields its base URL while it runs."""
    @contextmanager
    def start(**extra: str) -> Iterator[str]:
        port = free_port()
        with running(["serve", "--bind", f"127.0.0.1:{port}"], front_env(**extra), port,
                     tmp_path / "serve.log") as base_url:
            yield base_url
    return start


def token(base_url: str, secret: str) -> str:
    answer = requests.post(base_url + "/oauth2/token", timeout=PROMPT_S, data={
        "grant_type": "client_credentials", "client_id": "full", "client_secret": secret})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def log_lines(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "serve.log").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_server(connection: socket.socket) -> bool:
    """Return whether the server closed ``connection`` (what it wrote before is ignored)."""
    try:
        while connection.recv(65536):
            pass
        return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:  # reset
        return True


def test_slow_and_idle_sockets_leave_the_workers_free(front, test_secrets):
    """200 sockets dribbling headers and 200 sending nothing: a normal client is answered."""
    with front() as base_url, ExitStack() as held:
        idle = [held.enter_context(connect(base_url)) for _ in range(200)]
        slow = [held.enter_context(connect(base_url)) for _ in range(200)]
        for connection in slow:
            connection.sendall(b"GET /v1/products HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def dribble() -> None:  # one header line a second on each slow socket
            while not stop.wait(1.0):
                for connection in slow:
                    with suppress(OSError):
                        connection.sendall(b"X-Slow: 1\r\n")

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        try:
            time.sleep(1.0)  # every socket is open and the first headers are in
            access = token(base_url, test_secrets.client_secret)
            for _ in range(5):
                for path, headers in (("/healthz", {}),
                                      (PRODUCT, {"Authorization": f"Bearer {access}"})):
                    started = time.monotonic()
                    answer = requests.get(base_url + path, headers=headers, timeout=PROMPT_S)
                    assert answer.status_code == 200, answer.text
                    assert time.monotonic() - started < PROMPT_S
        finally:
            stop.set()
            dribbler.join()
        assert len(idle) + len(slow) == 400


def test_the_header_deadline_closes_a_slow_socket_before_any_worker_sees_it(front, tmp_path):
    with front(SHIM_FRONT_HEADER_TIMEOUT_S="2") as base_url, connect(base_url) as slow:
        slow.sendall(b"GET /v1/slow-header-canary HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(0.5)
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 15:
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:  # reset: closed
                closed = True
                break
            closed = closed_by_server(slow)
        assert closed, "the front kept a socket that never finished its headers"
        assert time.monotonic() - started < 10  # the 2 s deadline, not the keep-alive
        assert requests.get(base_url + "/healthz", timeout=PROMPT_S).status_code == 200
    canary = [line for line in log_lines(tmp_path) if "slow-header-canary" in line["message"]]
    assert [line["logger"] for line in canary] == ["shim.front"]  # nginx's, no worker's
    assert '"GET /v1/slow-header-canary" 408' in canary[0]["message"]


def test_past_the_cap_an_address_gets_the_legacy_429(front):
    pending = (b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n")
    with front(SHIM_FRONT_CONNECTIONS_PER_ADDRESS="2") as base_url, ExitStack() as held:
        for _ in range(2):  # two requests in progress: their bodies never come
            held.enter_context(connect(base_url)).sendall(pending)
        time.sleep(0.5)
        refused = exchange(base_url, "GET", PRODUCT)
        assert refused.status_line == "429 Too Many Requests"
        assert refused.json() == errors.GatewayMessage(429, RATE_LIMITED).body()
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert refused.headers["content-type"] == "application/json"
        held.close()
        time.sleep(0.5)
        assert exchange(base_url, "GET", PRODUCT).status_line != "429 Too Many Requests"


def token_call(base_url: str, secret: str, request_id: str,
               forwarded: str | None = None) -> RawAnswer:
    """Post one token call for client ``full`` on a fresh connection; return it as written."""
    form = f"grant_type=client_credentials&client_id=full&client_secret={secret}".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Request-Id": request_id}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return exchange(base_url, "POST", "/oauth2/token", headers=headers, body=form)


def assert_token_refused(answer: RawAnswer) -> None:
    """nginx's refusal of a token call past its rate: the token endpoint's OAuth2 429."""
    assert answer.status_line == "429 Too Many Requests"
    assert answer.json() == token_rate_limited().body()
    assert answer.json()["error"] == "temporarily_unavailable"
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["pragma"] == "no-cache"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-type"] == "application/json"


def app_saw(tmp_path: Path, request_ids: set[str]) -> set[str]:
    """Return which of ``request_ids`` gunicorn's access log shows (the app answered them)."""
    return {line["request_id"] for line in log_lines(tmp_path)
            if line["logger"] == "gunicorn.access" and line.get("request_id") in request_ids}


def test_token_calls_past_an_address_rate_get_the_token_429_from_nginx_alone(
        front, tmp_path, test_secrets):
    """A burst of token calls from one address: those past its rate and burst are nginx's 429
    in the token endpoint's OAuth2 shape, never seen by the app; the API is not limited."""
    secret = test_secrets.client_secret
    with front(SHIM_FRONT_TOKEN_RATE_PER_ADDRESS="1",
               SHIM_FRONT_TOKEN_BURST_PER_ADDRESS="2") as base_url:
        access = token(base_url, secret)  # a call under the limit works
        answers = {f"edge-{n}": token_call(base_url, secret, f"edge-{n}") for n in range(8)}
        refused = {rid for rid, answer in answers.items() if answer.status_line.startswith("429")}
        assert len(refused) >= 4  # at most 1 a second beyond 2 at once passed
        for rid in refused:
            assert_token_refused(answers[rid])
        passed = set(answers) - refused
        assert all(answers[rid].status_line == "200 OK" for rid in passed)
        # The API from the same address: not limited by the token calls' rate.
        for _ in range(5):
            answer = requests.get(base_url + PRODUCT, timeout=PROMPT_S,
                                  headers={"Authorization": f"Bearer {access}"})
            assert answer.status_code == 200, answer.text
    assert app_saw(tmp_path, set(answers)) == passed  # the refused never reached gunicorn
    front_lines = [line["message"] for line in log_lines(tmp_path)
                   if line["logger"] == "shim.front" and '"POST /oauth2/token" 429' in
                   line["message"]]
    assert len(front_lines) == len(refused)


def test_behind_a_trusted_proxy_the_token_rate_is_the_forwarded_address(front, tmp_path,
                                                                        test_secrets):
    """With trusted_proxy_hops 1, each forwarded address has its own token rate, and the
    front's total rate bounds them all together (a flood from many addresses)."""
    secret = test_secrets.client_secret
    with front(SHIM_TRUSTED_PROXY_HOPS="1", SHIM_FRONT_TOKEN_RATE_PER_ADDRESS="1",
               SHIM_FRONT_TOKEN_BURST_PER_ADDRESS="0", SHIM_FRONT_TOKEN_RATE="1000",
               SHIM_FRONT_TOKEN_BURST="1000") as base_url:
        one = [token_call(base_url, secret, f"one-{n}", "203.0.113.9, 198.51.100.7")
               for n in range(4)]
        assert one[0].status_line == "200 OK"
        assert any(answer.status_line.startswith("429") for answer in one[1:])
        other = token_call(base_url, secret, "other", "203.0.113.9, 198.51.100.8")
        assert other.status_line == "200 OK"  # its own address, its own rate
    with front(SHIM_TRUSTED_PROXY_HOPS="1", SHIM_FRONT_TOKEN_RATE="1",
               SHIM_FRONT_TOKEN_BURST="0") as base_url:
        many = [token_call(base_url, secret, f"many-{n}", f"198.51.100.{n + 1}")
                for n in range(4)]
        assert many[0].status_line == "200 OK"
        refused = [answer for answer in many[1:] if answer.status_line.startswith("429")]
        assert refused  # four addresses, one front: the total rate applies
        for answer in refused:
            assert_token_refused(answer)


def test_probes_and_scrapes_answer_while_an_address_is_at_the_cap(front, sandbox, operator_token,
                                                                   test_secrets):
    """Two API calls waiting for a slow platform fill a cap of 2: the next API call is the
    legacy 429, while /healthz, /readyz and /metrics from the same address still answer."""
    latency = sandbox.base_url + "/_sandbox/latency"
    with front(SHIM_FRONT_CONNECTIONS_PER_ADDRESS="2", SHIM_OPERATOR_TOKEN=operator_token,
               SHIM_READ_TIMEOUT_S="30") as base_url, ThreadPoolExecutor(2) as pool:
        bearer = {"Authorization": f"Bearer {token(base_url, test_secrets.client_secret)}"}
        assert requests.post(latency, json={"ms": 4000}, timeout=PROMPT_S).status_code == 200
        try:
            slow = [pool.submit(requests.get, base_url + PRODUCT, headers=bearer, timeout=30)
                    for _ in range(2)]
            time.sleep(1.0)  # both are waiting for the platform
            assert not any(call.done() for call in slow)
            refused = exchange(base_url, "GET", PRODUCT, headers=bearer)
            assert refused.status_line == "429 Too Many Requests"
            assert refused.json() == errors.GatewayMessage(429, RATE_LIMITED).body()
            assert refused.headers["retry-after"] == "1"
            for path, headers in (("/healthz", {}), ("/readyz", {}), ("/metrics", {
                    "Authorization": f"Bearer {operator_token}"})):
                answer = requests.get(base_url + path, headers=headers, timeout=PROMPT_S)
                assert answer.status_code == 200, (path, answer.text)
            assert not any(call.done() for call in slow)  # still at the cap throughout
            assert [call.result().status_code for call in slow] == [200, 200]
        finally:
            requests.post(latency, json={"ms": 0}, timeout=PROMPT_S)


def test_a_body_over_the_limit_is_the_legacy_413_before_gunicorn(front, tmp_path):
    with front(SHIM_MAX_BODY_BYTES="1000") as base_url:
        answer = exchange(base_url, "PATCH", "/v1/products/1/pickup-locations/2/stock-lots/0",
                          headers={"Content-Type": "application/json"},
                          body=b'{"quantityAtPickupLocation": 5' + b" " * 2000 + b"}")
        assert answer.status_line == "413 Request Entity Too Large"
        assert answer.json() == errors.payload_too_large(1000).body()
        assert answer.headers["x-content-type-options"] == "nosniff"
        own = exchange(base_url, "GET", "/_front/413.json?access_token=canary-front-404")
        assert own.json() == {"message": "no Route matched with those values"}
    logged = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert "stock-lots" in logged  # nginx's own answers are logged by serve ...
    assert "canary-front-404" not in logged  # ... without their query strings


def test_an_x_forwarded_for_from_a_client_is_not_its_address(front, tmp_path):
    with front() as base_url:
        answer = requests.get(base_url + "/healthz", timeout=PROMPT_S, headers={
            "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9",
            "X-Request-Id": "spoofed-address"})
        assert answer.status_code == 200
    access = [line for line in log_lines(tmp_path) if line.get("request_id") == "spoofed-address"
              and line["logger"] == "gunicorn.access"]
    assert [line["remote"] for line in access] == ["127.0.0.1"]


def test_behind_one_trusted_proxy_its_client_is_the_address(front, tmp_path):
    with front(SHIM_TRUSTED_PROXY_HOPS="1") as base_url:
        answer = requests.get(base_url + "/healthz", timeout=PROMPT_S, headers={
            "X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-Request-Id": "proxied"})
        assert answer.status_code == 200
    access = [line for line in log_lines(tmp_path) if line.get("request_id") == "proxied"
              and line["logger"] == "gunicorn.access"]
    assert [line["remote"] for line in access] == ["198.51.100.7"]


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listed:
        return [int(child) for child in listed.read().split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


@contextmanager
def started(processes, front_env, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A serve process this test stops itself, and its base URL once healthy."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as log:
        process = processes.start([sys.executable, "-m", "shim", "serve", "--bind",
                                   f"127.0.0.1:{port}"], env=front_env(), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            if requests.get(base_url + "/healthz", timeout=0.5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.1)
    yield process, base_url


def test_sigterm_answers_what_is_in_flight_then_stops_both(processes, front_env, tmp_path,
                                                             test_secrets):
    form = (f"grant_type=client_credentials&client_id=full&client_secret="
            f"{test_secrets.client_secret}").encode()
    with started(processes, front_env, tmp_path) as (process, base_url):
        both = children(process.pid)
        assert len(both) == 2  # gunicorn and nginx
        with connect(base_url) as in_flight:
            in_flight.sendall(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                              b"Content-Type: application/x-www-form-urlencoded\r\n"
                              + f"Content-Length: {len(form)}\r\n\r\n".encode() + form[:10])
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            in_flight.sendall(form[10:])
            received = b""
            while chunk := in_flight.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK"), received[:300]
        assert b'"access_token"' in received
        assert process.wait(timeout=30) == 0
    assert wait_gone(both) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url + "/healthz", timeout=2)


def test_when_nginx_dies_serve_stops_gunicorn_and_fails(processes, front_env, tmp_path):
    with started(processes, front_env, tmp_path) as (process, base_url):
        before = children(process.pid)
        (pid_file,) = tmp_path.glob("redmart-shim-front-*/nginx.pid")
        nginx = int(pid_file.read_text())
        assert nginx in before
        workers = [pid for child in before for pid in children(child)]
        os.kill(nginx, signal.SIGKILL)  # its worker, orphaned, would go on serving
        assert process.wait(timeout=60) != 0
    assert wait_gone(before + workers) == []
    assert not list(tmp_path.glob("redmart-shim-front-*"))
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url + "/healthz", timeout=2)


@pytest.mark.parametrize(("line", "level"), [
    ('2026/12/06 04:09:15 [error] 20709#20709: *4 client intended to send too large body: '
     '20000 bytes, client: 127.0.0.1, server: , request: "PATCH /v1/x?access_token=canary '
     'HTTP/1.1", host: "127.0.0.1:8080"', logging.INFO),
    ('2026/12/06 04:18:54 [crit] 11900#11900: *1 connect() to unix:/run/gunicorn.sock failed '
     '(2: No such file or directory) while connecting to upstream, client: 127.0.0.1, '
     'request: "GET /v1/products?access_token=canary HTTP/1.1", upstream: '
     '"http://unix:/run/gunicorn.sock:/v1/products?access_token=canary"', logging.CRITICAL),
])
def test_nginx_lines_lose_their_queries_and_client_faults_are_not_errors(line, level):
    assert "canary" not in front_module.clean_line(line)
    assert front_module.line_level(line) == level


def test_when_gunicorn_dies_serve_stops_nginx_and_fails(processes, front_env, tmp_path):
    with started(processes, front_env, tmp_path) as (process, base_url):
        before = children(process.pid)
        (pid_file,) = tmp_path.glob("redmart-shim-front-*/nginx.pid")
        (gunicorn,) = set(before) - {int(pid_file.read_text())}
        workers = [pid for child in before for pid in children(child)]
        assert workers  # gunicorn's worker, nginx's worker
        os.kill(gunicorn, signal.SIGKILL)
        assert process.wait(timeout=60) != 0
    assert wait_gone(before + workers) == []  # the orphaned worker too
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url + "/healthz", timeout=2)


def session_members(session: int) -> list[int]:
    """Return the ids of the living processes in session ``session`` (Linux's /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        with suppress(OSError, ValueError, IndexError):
            # Fields after the command's closing parenthesis: state, ppid, pgrp, session.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(fields[3]) == session and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_without_nginx_serve_says_how_to_install_it_and_starts_nothing(processes, front_env,
                                                                       tmp_path):
    """front_nginx names a file that is not there: one line, exit 1, no gunicorn left."""
    cli = Path(sys.executable).with_name("redmart-shim")
    process = processes.start(
        [str(cli), "serve", "--bind", f"127.0.0.1:{free_port()}"],
        env=front_env(SHIM_FRONT_NGINX=str(tmp_path / "no-such" / "nginx")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert out == b""
    (line,) = err.decode().splitlines()
    assert line.startswith(f"redmart-shim: nginx is not at {tmp_path}/no-such/nginx")
    assert "apt-get install nginx-light" in line
    assert 'front = "none"' in line and "SHIM_FRONT=none" in line
    assert session_members(process.pid) == []  # no gunicorn (nor worker) left behind
    assert list(tmp_path.glob(config.METRICS_DIR_PREFIX + "*")) == []  # nor its metrics folder

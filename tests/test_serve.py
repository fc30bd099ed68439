"""``redmart-shim serve``: gunicorn's values come from the settings, and its start and exit."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

CONFIG = """
[upstream]
app_key = "100001"
app_secret = { env = "T_APP_SECRET" }
api_url = "http://127.0.0.1:9/rest"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(tmp_path, **values: str) -> dict[str, str]:
    """This environment without SHIM_* variables, temp files under tmp_path, plus values."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SHIM_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    return {**env, "TMPDIR": str(tmp_path), "T_APP_SECRET": "app-secret-value", **values}


def config_file(tmp_path, extra: str = "") -> str:
    path = tmp_path / "shim.toml"
    path.write_text(CONFIG + extra)
    return str(path)


def serve(processes, *args: str, env: dict[str, str], timeout: float = 60):
    return processes.run([sys.executable, "-m", "shim", "serve", *args], env=env,
                         capture_output=True, text=True, timeout=timeout)


def gunicorn_config(processes, tmp_path, *args: str, **values: str) -> dict[str, str]:
    """gunicorn's configuration as ``serve`` loads it (gunicorn prints it and exits).

    Without the nginx front (which would bind gunicorn to its private socket instead).
    """
    values.setdefault("SHIM_FRONT", "none")
    env = environment(tmp_path, GUNICORN_CMD_ARGS="--print-config",
                      PROMETHEUS_MULTIPROC_DIR=str(tmp_path), **values)
    result = serve(processes, *args, env=env)
    assert result.returncode == 0, result.stderr
    lines = (line.partition("=") for line in result.stdout.splitlines() if " = " in line)
    return {name.strip(): value.strip() for name, _, value in lines}


def test_a_toml_read_timeout_changes_the_worker_timeout(processes, tmp_path):
    default = gunicorn_config(processes, tmp_path, "--config", config_file(tmp_path))
    longer = gunicorn_config(processes, tmp_path, "--config", config_file(
        tmp_path, "[shim]\nread_timeout_s = 30\nread_retries = 1\nlock_timeout_s = 5\n"))
    assert (default["timeout"], default["graceful_timeout"]) == ("57", "52")  # 10 x 3 + 2 + 15
    assert (longer["timeout"], longer["graceful_timeout"]) == ("77", "72")  # 30 x 2 + 2 + 5


def test_gunicorn_values_come_from_the_file_and_the_environment(processes, tmp_path):
    path = config_file(tmp_path, '[serve]\nbind = "127.0.0.1:28490"\nthreads = 8\n'
                                 'worker_timeout_s = 99\naccess_log = "/dev/null"\n')
    loaded = gunicorn_config(processes, tmp_path, "--config", path, SHIM_THREADS="16",
                             SHIM_FORWARDED_ALLOW_IPS="10.0.0.1")
    assert loaded["bind"] == "['127.0.0.1:28490']"
    assert loaded["threads"] == "16"  # the environment overrides the file
    assert loaded["timeout"] == "99"
    assert loaded["accesslog"] == "/dev/null"
    assert loaded["forwarded_allow_ips"] == "['10.0.0.1']"
    assert loaded["control_socket_disable"] == "True"  # no socket shared between instances


def test_an_empty_access_log_means_none(processes, tmp_path):
    loaded = gunicorn_config(processes, tmp_path, "--config", config_file(tmp_path),
                             SHIM_ACCESS_LOG="")
    assert loaded["accesslog"] == "None"


@pytest.mark.parametrize("given", [("--bind", ":28491"), ("SHIM_BIND", ":28491")])
def test_a_port_alone_means_127_0_0_1(processes, tmp_path, given):
    flag, value = given
    on_line = flag == "--bind"
    args = ("--config", config_file(tmp_path), *((flag, value) if on_line else ()))
    loaded = gunicorn_config(processes, tmp_path, *args, **({} if on_line else {flag: value}))
    assert loaded["bind"] == "['127.0.0.1:28491']"


@pytest.mark.parametrize(("variables", "message"), [
    ({"SHIM_BIND": "127.0.0.1:99999"}, "SHIM_BIND must be host:port"),
    ({"SHIM_BIND": "localhost"}, "SHIM_BIND must be host:port"),
    ({"SHIM_RATELIMIT_PER_SECOND": "5"},
     "unknown environment variable SHIM_RATELIMIT_PER_SECOND (did you mean "
     "SHIM_RATE_LIMIT_PER_SECOND?)"),
    ({"SHIM_WORKERS": "0"}, "SHIM_WORKERS must be at least 1"),
])
def test_bad_serve_settings_are_one_line_and_exit_2(processes, tmp_path, variables, message):
    result = serve(processes, "--config", config_file(tmp_path),
                   env=environment(tmp_path, **variables))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_one_clear_line_and_exit_1(processes, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        for dev in ((), ("--dev",)):
            result = serve(processes, "--config", config_file(tmp_path), "--bind",
                           f"127.0.0.1:{port}", *dev, env=environment(tmp_path), timeout=30)
            assert result.returncode == 1, result.stderr
            assert result.stderr == (f"redmart-shim: cannot listen on 127.0.0.1:{port}: "
                                     "Address already in use\n")
    assert not list(tmp_path.glob("redmart-shim-metrics-*"))


def start(processes, tmp_path, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (tmp_path / "serve.log").open("wb") as log:  # the child keeps its own descriptor
        return processes.start([sys.executable, "-m", "shim", "serve", *args], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(process: subprocess.Popen[bytes], url: str, log) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if requests.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except requests.RequestException:  # refused, or slow to answer while starting
            pass
        assert time.monotonic() < deadline, "never became healthy:\n" + log.read_text()
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.slow
def test_serve_removes_its_metrics_directory_on_exit(processes, tmp_path):
    port = free_port()
    process = start(processes, tmp_path, "--config", config_file(tmp_path),
                    env=environment(tmp_path, SHIM_BIND=f"127.0.0.1:{port}"))
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}", tmp_path / "serve.log")
        assert len(list(tmp_path.glob("redmart-shim-metrics-*"))) == 1  # while it runs
    finally:
        stop(process)
    assert list(tmp_path.glob("redmart-shim-metrics-*")) == []


def test_the_development_server_honours_shim_bind(processes, tmp_path):
    port = free_port()
    process = start(processes, tmp_path, "--dev", "--config", config_file(tmp_path),
                    env=environment(tmp_path, SHIM_BIND=f":{port}"))
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}", tmp_path / "serve.log")
    finally:
        stop(process)


def test_each_worker_freezes_its_startup_heap_out_of_garbage_collection(processes, tmp_path):
    """A full collection no longer walks what the worker loaded (the app, its modules): the
    worker says how much it froze, at debug level."""
    port = free_port()
    log = tmp_path / "serve.log"
    process = start(processes, tmp_path, "--config", config_file(tmp_path),
                    env=environment(tmp_path, SHIM_BIND=f"127.0.0.1:{port}",
                                    SHIM_LOG_LEVEL="debug"))
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}", log)
    finally:
        stop(process)
    lines = [json.loads(line) for line in log.read_text().splitlines() if "froze" in line]
    frozen = [re.fullmatch(r"worker froze (\d+) startup objects out of garbage collection",
                           line["message"]) for line in lines]
    assert len(frozen) == 1 and frozen[0], lines  # one worker with these settings
    assert int(frozen[0].group(1)) > 50_000  # the loaded app, not a handful of objects

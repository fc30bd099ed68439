"""The ``redmart-shim`` command line: exit codes and messages."""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import requests
from processes import default_sigint

from shim import config, credentials
from shim.store.crypto import Sealer
from shim.store.migrations import LATEST


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "shim", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, preexec_fn=default_sigint)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "sandbox", "demo", "hash-secret", "new-key", "migrate", "apps",
                    "sellers", "clients", "record", "verify"):
        assert command in result.stdout


def test_serve_with_a_broken_config_exits_2_and_says_why(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[upstream]\napp_key = "1"\napp_secret = "in-the-file"\n')
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert "in-the-file" not in result.stderr


def test_hash_secret_reads_stdin_and_prints_a_verifiable_digest():
    result = run("hash-secret", stdin="s3cret-value\n")
    assert result.returncode == 0
    digest = result.stdout.strip()
    assert digest.startswith("scrypt$")
    assert "s3cret-value" not in digest
    assert credentials.verify_secret("s3cret-value", digest)


def test_hash_secret_refuses_an_empty_secret():
    assert run("hash-secret", stdin="\n").returncode == 2


def test_the_sandbox_command_writes_its_credentials_for_the_owner_only(tmp_path, processes):
    """An existing credentials file is made private too (a mode given to open() applies only
    to a file it creates)."""
    path = tmp_path / "sandbox.env"
    path.write_text("old\n")
    path.chmod(0o644)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = processes.start(
        [sys.executable, "-m", "shim", "sandbox", "--port", str(port),
         "--credentials-file", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while "SHIM_APP_SECRET=" not in path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "export SHIM_APP_SECRET=" in path.read_text()
    # Loaded whole before the shim starts: none of them may be refused as unknown.
    names = [line.split()[1].split("=")[0] for line in path.read_text().splitlines()
             if line.startswith("export ")]
    assert names and all(config.is_known_variable(name) for name in names)


def start_demo(processes, env: dict[str, str]) -> dict:
    """Start ``demo --json`` on free ports; return the document it printed."""
    process = processes.start([sys.executable, "-m", "shim", "demo", "--json", "--port", "0"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    printed = ""
    while True:
        line = process.stdout.readline()
        assert line, "the demo stopped"
        printed += line
        if line.startswith("}"):
            return json.loads(printed)


def without_shim_settings() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("SHIM_")}


def test_the_demo_prints_an_operator_token_that_opens_the_status_page(processes):
    demo = start_demo(processes, without_shim_settings())
    assert demo["status_page"] == demo["url"] + "/operator/status"
    token = demo["operator_token"]
    assert requests.get(demo["status_page"], timeout=10).status_code == 401
    answer = requests.get(demo["status_page"], headers={"Authorization": f"Bearer {token}"},
                          timeout=10)
    assert answer.status_code == 200 and 'data-seller="demo"' in answer.text
    assert requests.get(demo["metrics"], auth=("any", token), timeout=10).status_code == 200


def test_the_demo_takes_the_operators_token_and_does_not_print_it(processes):
    token = "operator-" + secrets.token_hex(16)
    demo = start_demo(processes, {**without_shim_settings(), "SHIM_OPERATOR_TOKEN": token})
    assert demo["operator_token"] is None
    answer = requests.get(demo["status_page"], headers={"Authorization": f"Bearer {token}"},
                          timeout=10)
    assert answer.status_code == 200


def run_without_settings(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shim", *args], capture_output=True,
                          text=True, timeout=60, preexec_fn=default_sigint, cwd=cwd,
                          env=without_shim_settings())


def test_with_no_settings_at_all_the_error_names_config_and_shim_config(tmp_path):
    for command in (("serve",), ("migrate",), ("sellers", "list")):
        result = run_without_settings(*command, cwd=tmp_path)
        assert result.returncode == 2, command
        assert "--config" in result.stderr and "SHIM_CONFIG" in result.stderr, command
    path = tmp_path / "bad.toml"
    path.write_text('[upstream]\napp_key = "1"\n')
    named = run_without_settings("migrate", "--config", str(path), cwd=tmp_path)
    assert named.returncode == 2 and "no settings file" not in named.stderr


def test_the_one_line_commands_print_json_on_request(tmp_path):
    key = json.loads(run("new-key", "--json").stdout)["key"]
    assert Sealer(key)  # a key the store accepts
    digest = json.loads(run("hash-secret", "--json", stdin="s3cret\n").stdout)["digest"]
    assert credentials.verify_secret("s3cret", digest)
    env = {**without_shim_settings(), "SHIM_APP_KEY": "1", "SHIM_APP_SECRET": "x",
           "SHIM_DATABASE_URL": f"sqlite:///{tmp_path / 'shim.db'}", "SHIM_ENCRYPTION_KEY": key}
    for expected in (list(range(1, LATEST + 1)), []):
        result = subprocess.run([sys.executable, "-m", "shim", "migrate", "--json"], env=env,
                                capture_output=True, text=True, timeout=60,
                                preexec_fn=default_sigint)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"applied": expected}

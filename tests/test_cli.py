"""The ``redmart-shim`` command line: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

from shim import credentials


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "shim", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


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

"""The settings reference: derived from the declarations, and docs/settings.md kept equal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shim import config, settings_reference

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def settings_command(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "shim", "settings", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_docs_settings_md_is_what_the_command_prints():
    assert DOCS.read_text(encoding="utf-8") == settings_command("--markdown"), (
        f"docs/settings.md is out of date: {settings_reference.REGENERATE}")


def test_every_setting_is_listed_with_its_table_variable_type_default_and_meaning():
    listed = json.loads(settings_command("--json"))
    by_env = {entry["env"]: entry for entry in listed if entry["env"]}
    assert set(by_env) == {declared.env for declared in config.DECLARED}
    ttl = by_env["SHIM_TOKEN_TTL_S"]
    assert (ttl["table"], ttl["key"], ttl["type"], ttl["default"], ttl["checks"]) == (
        "[shim]", "token_ttl_s", "a whole number", 7200, ["positive"])
    assert by_env["SHIM_BIND"]["table"] == "[serve]"
    assert by_env["SHIM_APP_KEY"]["required"] is True
    assert by_env["SHIM_OPERATOR_TOKEN"]["key"] is None  # never in the file
    assert all(entry["meaning"] for entry in listed)
    tables = {(entry["table"], entry["key"]) for entry in listed}
    assert {("[[sellers]]", key) for key in config.SELLER_KEYS} <= tables
    assert {("[[clients]]", key) for key in config.CLIENT_KEYS} <= tables


def test_the_text_form_names_each_variable_and_its_default():
    text = settings_command()
    for declared in config.DECLARED:
        assert f"${declared.env}" in text
    assert "[shim] token_ttl_s  $SHIM_TOKEN_TTL_S\n    a whole number; positive; default 7200\n" \
        in text

"""The settings reference, derived from the declarations in ``shim.config``: no I/O.

``redmart-shim settings`` prints it (text, ``--json``, ``--markdown``); docs/settings.md is
its Markdown form, regenerated with ``redmart-shim settings --markdown > docs/settings.md``.
"""

from __future__ import annotations

import json
from dataclasses import MISSING
from typing import Any

from shim import config

REGENERATE = "redmart-shim settings --markdown > docs/settings.md"
TABLE_NOTES = {
    "upstream": "The Lazada Open Platform app and where its API is.",
    "shim": "How the shim serves the legacy API.",
    "serve": "gunicorn, as `redmart-shim serve` runs it.",
    "sellers": "One table per seller (declarative mode: no database_url). File only.",
    "clients": "One table per legacy client (declarative mode). File only.",
}


def entries() -> list[dict[str, Any]]:
    """Return one description per setting: where it is written, its type, default, meaning."""
    found = [_entry(declared) for declared in config.DECLARED]
    for table, keys in (("sellers", config.SELLER_KEYS), ("clients", config.CLIENT_KEYS)):
        found.extend({"table": f"[[{table}]]", "key": key, "env": None, "type": None,
                      "checks": [], "default": None, "required": False, "secret": False,
                      "meaning": meaning} for key, meaning in keys.items())
    return found


def _entry(declared: config.Declared) -> dict[str, Any]:
    required = declared.default is MISSING
    return {
        "table": f"[{declared.setting.table}]",
        "key": declared.name if declared.in_file else None,
        "env": declared.env,
        "type": declared.type_name,
        "checks": [_rule(check) for check in declared.setting.checks if _rule(check)],
        "default": None if required else declared.default,
        "required": required,
        "secret": declared.secret,
        "meaning": declared.setting.meaning,
    }


def _rule(check: Any) -> str:
    """A check in words, from the message it gives ("must be positive": "positive")."""
    error = getattr(check, "error", None)
    if not isinstance(error, str) or not error.startswith("must "):
        return ""
    return error.removeprefix("must ").removeprefix("be ").replace("not be ", "not ", 1)


def _default(entry: dict[str, Any]) -> str:
    if entry["required"]:
        return "required"
    value = entry["default"]
    if value is None:
        return "unset"
    return json.dumps(value)  # TOML writes these values the same way


def _where(entry: dict[str, Any]) -> str:
    if entry["key"] is None:
        return "(environment only)"
    suffix = " (a reference)" if entry["secret"] else ""
    return f"{entry['table']} {entry['key']}{suffix}"


def _kind(entry: dict[str, Any]) -> str:
    return "; ".join([entry["type"], *entry["checks"]]) if entry["type"] else ""


def render_text(found: list[dict[str, Any]]) -> str:
    """Return the reference as plain text, one block per setting."""
    blocks = []
    for entry in found:
        head = _where(entry) + (f"  ${entry['env']}" if entry["env"] else "")
        default = _default(entry)
        details = "; ".join(part for part in (
            _kind(entry), (default if entry["required"] else f"default {default}")
            if entry["type"] else "") if part)
        blocks.append("\n".join(line for line in (
            head, f"    {details}" if details else "", f"    {entry['meaning']}") if line))
    return "\n".join(blocks) + "\n"


def render_json(found: list[dict[str, Any]]) -> str:
    """Return the reference as a JSON array."""
    return json.dumps(found, indent=2) + "\n"


def render_markdown(found: list[dict[str, Any]]) -> str:
    """Return the reference as docs/settings.md: a table per TOML table."""
    lines = [
        "# Settings",
        "",
        f"Generated from `shim/config.py` by `{REGENERATE}`; do not edit by hand",
        "(a test fails when this file and the code differ).",
        "",
        "Each setting is read from its table in the TOML file (`--config` or `$SHIM_CONFIG`)",
        "and from its environment variable, which wins. Secrets are never written in the file:",
        '`app_secret` may be a reference there (`{env = "NAME"}` or `{file = "PATH"}`), the',
        "others come from the environment only. An empty variable unsets an optional setting.",
        "An unknown `SHIM_*` variable is refused at start.",
    ]
    tables = list(dict.fromkeys(entry["table"] for entry in found))
    for table in tables:
        name = table.strip("[]")
        lines += ["", f"## `{table}`", "", TABLE_NOTES.get(name, ""), ""]
        rows = [entry for entry in found if entry["table"] == table]
        if rows[0]["type"] is None:
            lines += ["| Key | Meaning |", "| --- | --- |"]
            lines += [f"| `{entry['key']}` | {_cell(entry['meaning'])} |" for entry in rows]
            continue
        lines += ["| Key | Environment | Type | Default | Meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for entry in rows:
            key = f"`{entry['key']}`" if entry["key"] else "(environment only)"
            if entry["secret"] and entry["key"]:
                key += " (a reference)"
            default = _default(entry)
            if default not in ("required", "unset"):
                default = f"`{default}`"
            lines.append(f"| {key} | `{entry['env']}` | {_cell(_kind(entry))} "
                         f"| {_cell(default)} | {_cell(entry['meaning'])} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")

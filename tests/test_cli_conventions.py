"""Conventions every ``redmart-shim`` command keeps: help, defaults, --json, plain text."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shim import cli

README = Path(__file__).resolve().parent.parent / "README.md"
NO_JSON_HEADING = "Commands without `--json`"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Yield every command that runs (a leaf of the tree), with its words."""
    groups = [action for action in parser._actions
              if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, child in group.choices.items():
            yield from commands(child, (*path, name))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions
            if not isinstance(action, argparse._HelpAction | argparse._VersionAction)]


def all_commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return list(commands(cli.build_parser()))


COMMANDS = all_commands()


def test_the_tree_has_the_commands_the_readme_names():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "sandbox", "demo", "migrate", "sellers add", "clients add",
            "sellers complete", "verify"} <= names


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_says_what_it_does_and_its_default(path, parser):
    for action in options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{' '.join(path)} {name}: no help"
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if shown and not action.required and action.option_strings:
            assert "default" in action.help, f"{' '.join(path)} {name}: default not shown"


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_is_plain_text(path, parser):
    texts = [parser.description or "", *(action.help or "" for action in options(parser))]
    for text in texts:
        assert "``" not in text and ":class:" not in text, (path, text)
    assert "``" not in (cli.build_parser().description or "")


def readme_commands_without_json() -> set[str]:
    """The commands the README lists as taking no --json."""
    text = README.read_text(encoding="utf-8")
    assert NO_JSON_HEADING in text
    paragraph = text.split(NO_JSON_HEADING, 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`redmart-shim ([a-z -]+?)`", paragraph))


def test_every_command_takes_json_or_the_readme_says_it_does_not():
    without = {" ".join(path) for path, parser in COMMANDS
               if "--json" not in {s for action in parser._actions for s in action.option_strings}}
    assert without == readme_commands_without_json()


def test_version_is_the_installed_one(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == (
        "redmart-shim " + importlib.metadata.version("redmart-shim"))

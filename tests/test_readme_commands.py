"""Every `perpsim` command line the README gives, as written: each parses (its options
exist and take those values), and those that finish in moments run and succeed. Those
that need a running exchange or a cluster (`PORT`, `host:9092`) or run for a minute are
parsed only (the services and live tests run those paths); synopses (`[--seed N]`,
`NAME`, `FILE`) are left out."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from services.cli import main

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDERS = ("[", "FILE", "NAME", "...", "KEY", "COMMAND")
QUICK = ("scenario", "demo", "--help", "simulate --list")  # these run to the end here


def readme_command_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    lines, fence = [], None
    for line in text.splitlines():  # the code blocks' lines, fence by fence
        if line.startswith("```"):
            fence = None if fence is not None else (line[3:].strip() or "text")
            continue
        if fence in ("bash", "sh", "text"):
            for part in line.split("#", 1)[0].split("&&"):
                if "bin/perpsim" in part:
                    lines.append(part.strip().split("bin/perpsim", 1)[1].strip())
    for inline in re.findall(r"`perpsim ([^`]*)`", text):  # and the prose
        lines.append(inline.strip())
    return sorted({line for line in lines if not any(mark in line for mark in PLACEHOLDERS)})


def parse(arguments: list[str]) -> click.Context:
    """What click makes of a command line, without running it (an unknown option or a bad
    value raises UsageError)."""
    context = main.make_context("perpsim", list(arguments))
    rest = context._protected_args + context.args
    command: click.Command = main
    while isinstance(command, click.Group) and rest:
        name, command, arguments = command.resolve_command(context, rest)
        context = command.make_context(name, arguments, parent=context)
        rest = context._protected_args + context.args if isinstance(command, click.Group) else []
    return context


LINES = readme_command_lines()


def test_the_readme_gives_commands_worth_checking():
    assert len(LINES) >= 10, LINES
    assert "up" in LINES and "scenario isolated" in LINES and "simulate --list" in LINES
    assert any(line.startswith("accounts create") for line in LINES)


@pytest.mark.parametrize("line", LINES)
def test_a_readme_command_line_parses_and_the_quick_ones_run(line, tmp_path, monkeypatch):
    arguments = shlex.split(line)
    if "--help" not in arguments:  # help ends parsing at once, successfully: it is run below
        parse(arguments)
    if line.startswith(QUICK) or line.endswith("--help"):
        monkeypatch.chdir(tmp_path)
        if "--markets-file" in arguments:  # the file the README shows just below
            readme = (ROOT / "README.md").read_text()
            (tmp_path / "markets.toml").write_text(readme.split("Your own markets go in a TOML file", 1)[1]
                                                   .split("```toml\n", 1)[1].split("```", 1)[0])
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 0, (line, result.output)

"""Docs tests: every setting and command is documented, the changelog is current."""

import re
from pathlib import Path

from mailbot import __version__
from mailbot.cli import build_parser
from mailbot.config import setting_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in setting_names() if f"`{name}`" not in text]
    assert not missing, f"undocumented settings: {missing}"
    for name in setting_names():
        env = "MAILBOT_" + name.upper().replace(".", "__")
        assert f"`{env}`" in text, env


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                path = (*prefix, name)
                children = list(_subcommands(sub, path))
                yield from children or [path]


def test_every_cli_command_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    commands = [" ".join(path) for path in _subcommands(build_parser())]
    assert "inbox retry" in commands
    missing = [c for c in commands if f"mailbot {c}" not in text]
    assert not missing, f"undocumented commands: {missing}"


def test_changelog_has_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(__version__)}\]?", text, re.MULTILINE)


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first = text.index("make run")
    assert first < 1500
    assert "make test" in text[:2000]

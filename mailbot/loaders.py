"""Reads the operator's behaviour files: ``rules.yaml`` and ``agents.yaml``.

The parsing is pure (``rules``, ``directory``); this module does the file
I/O, picks the built-in default rules when the configured default file is
absent, and watches the rules file for changes so the daemon can reload it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mailbot.config import Settings
from mailbot.directory import People, load_people
from mailbot.errors import ConfigError
from mailbot.rules import Directory, RuleSet, load_rules, reload_rules

log = logging.getLogger(__name__)

BUILTIN_RULES = Path(__file__).parent / "rules" / "default.yaml"
DEFAULT_RULES_FILE = "rules.yaml"


def rules_path(settings: Settings) -> Path:
    path = Path(settings.rules_file)
    if settings.rules_file == DEFAULT_RULES_FILE and not path.exists():
        return BUILTIN_RULES
    return path


def read_people(settings: Settings) -> People:
    if not settings.agents_file:
        return People()
    path = Path(settings.agents_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"agents_file: cannot read {path}: {exc}") from exc
    return load_people(text, source=str(path))


def directory_of(people: People, templates: frozenset[str] | None = None) -> Directory:
    return Directory(
        agents=frozenset(people.agents),
        teams=frozenset(t.name for t in people.teams),
        templates=templates,
    )


def read_rules(settings: Settings, directory: Directory) -> RuleSet:
    """Load the rules; raises RulesError (a ConfigError) naming every problem."""
    path = rules_path(settings)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"rules_file: cannot read {path}: {exc}") from exc
    return load_rules(text, source=str(path), directory=directory)


@dataclass
class RulesWatcher:
    """Reloads the rules when the file changes; a broken file keeps the last good rules."""

    settings: Settings
    directory: Directory
    rules: RuleSet
    mtime: float = 0.0

    def __post_init__(self) -> None:
        self.mtime = self._mtime()

    def _mtime(self) -> float:
        try:
            return rules_path(self.settings).stat().st_mtime
        except OSError:
            return 0.0

    def changed(self) -> bool:
        return self._mtime() != self.mtime

    def reload(self, reason: str) -> bool:
        """Try the file again; True when new rules are in force."""
        path = rules_path(self.settings)
        self.mtime = self._mtime()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            log.error(
                "rules not reloaded (%s): cannot read %s: %s; the last good rules stay",
                reason,
                path,
                exc,
                extra={"action": "rules_reload_failed"},
            )
            return False
        rules, error = reload_rules(self.rules, text, source=str(path), directory=self.directory)
        if error is not None:
            log.error(
                "rules not reloaded (%s): %s; the last good rules stay",
                reason,
                error,
                extra={"action": "rules_reload_failed"},
            )
            return False
        self.rules = rules
        log.info(
            "rules reloaded (%s): %d rules from %s",
            reason,
            len(rules),
            path,
            extra={"action": "rules_reloaded"},
        )
        return True

"""What one rule did with one mail: matched, missed, disabled or skipped, and why."""

from __future__ import annotations

import enum
from typing import NamedTuple


class Verdict(enum.StrEnum):
    matched = "matched"
    missed = "missed"
    disabled = "disabled"
    skipped = "skipped"  # an earlier matching rule stopped the run


class Outcome(NamedTuple):
    """What one rule did with one mail, for ``rules test`` and the stored hits."""

    rule_id: str
    line: int
    verdict: Verdict
    explanation: str
    actions: tuple[str, ...] = ()

    @property
    def matched(self) -> bool:
        return self.verdict is Verdict.matched

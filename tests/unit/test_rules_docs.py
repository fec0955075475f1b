"""Every rule condition and action id is documented in docs/rules.md."""

from pathlib import Path

from mailbot.rules import ACTIONS, CATEGORIES, CONDITIONS

TEXT = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()


def test_every_condition_is_documented():
    missing = [cid for cid in CONDITIONS if f"`{cid}`" not in TEXT]
    assert not missing, f"undocumented conditions: {missing}"


def test_every_action_is_documented():
    missing = [aid for aid in ACTIONS if f"`{aid}`" not in TEXT]
    assert not missing, f"undocumented actions: {missing}"


def test_every_category_and_subcategory_is_documented():
    names = [*CATEGORIES, *(s for subs in CATEGORIES.values() for s in subs)]
    missing = [name for name in names if f"`{name}`" not in TEXT]
    assert not missing, f"undocumented categories: {missing}"

"""`[[imap]]` settings: validation, secrets, documentation names (no Dovecot needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailbot.config import imap_password, load_settings, masked, setting_names
from mailbot.errors import ConfigError

MAILBOX = (
    '[[imap]]\nname = "support"\nhost = "imap.example.org"\nusername = "support"\n'
    'password_env = "IMAP_SUPPORT_PASSWORD"\n'
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailbot.toml"
    path.write_text(text)
    return path


def test_mailboxes_from_the_file_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MAILBOX), environ={})
    (mailbox,) = settings.imap
    assert mailbox.port == 993
    assert mailbox.tls == "tls"
    assert mailbox.folders == ("INBOX",)
    assert mailbox.processed_action == "move"
    assert load_settings(environ={}).imap == ()


def test_password_from_environment_or_file_never_in_check_config(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MAILBOX), environ={})
    assert imap_password(settings.imap[0], {"IMAP_SUPPORT_PASSWORD": "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match=r"\$IMAP_SUPPORT_PASSWORD is not set"):
        imap_password(settings.imap[0], {})
    secret = tmp_path / "pw"
    secret.write_text("from-file\nignored\n")
    text = MAILBOX.replace('password_env = "IMAP_SUPPORT_PASSWORD"', f'password_file = "{secret}"')
    mailbox = load_settings(write(tmp_path, text), environ={}).imap[0]
    assert imap_password(mailbox) == "from-file"
    assert "from-file" not in json.dumps(masked(load_settings(write(tmp_path, text), environ={})))
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot read password_file") as info:
        imap_password(mailbox)
    assert "from-file" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('password_env = "IMAP_SUPPORT_PASSWORD"', ""), "exactly one of password_file"),
        (('host = "imap.example.org"', 'host = "imap.example.org"\ntls = "none"'), "loopback"),
        (('name = "support"', 'name = "no spaces"'), "imap.0.name"),
        (('username = "support"', 'username = "s"\nfolders = ["Processed"]'), "target folder"),
        (('username = "support"', 'username = "s"\ntls = "plain"'), "imap.0.tls"),
    ],
)
def test_invalid_mailboxes_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, MAILBOX.replace(*change)), environ={})


def test_duplicate_names_and_per_key_environment_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write(tmp_path, MAILBOX + MAILBOX), environ={})
    with pytest.raises(ConfigError, match="MAILBOT_IMAP__HOST"):
        load_settings(write(tmp_path, MAILBOX), environ={"MAILBOT_IMAP__HOST": "x"})


def test_whole_list_as_json_in_the_environment() -> None:
    value = json.dumps(
        [{"name": "a", "host": "127.0.0.1", "tls": "none", "username": "u", "password_env": "P"}]
    )
    assert load_settings(environ={"MAILBOT_IMAP": value}).imap[0].name == "a"


def test_setting_names_report_list_of_table_keys() -> None:
    names = setting_names()
    assert "imap.host" in names
    assert "imap.password_file" in names
    assert "imap" not in names

from pathlib import Path

import pytest

from mailbot.config import Settings, load_settings, masked, setting_names
from mailbot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_run_on_a_fresh_machine():
    settings = load_settings(environ={})
    assert settings.smtp.host == "127.0.0.1"
    assert settings.smtp.port == 2525
    assert settings.support_address == "support@localhost"
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("/var/mailbot.db")
    assert settings.outgoing_maildir == Path("var/outgoing")
    assert settings.attachment_dir == Path("var/attachments")


def test_file_then_environment(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('support_address = "help@example.org"\n[smtp]\nport = 2600\nhost = "0.0.0.0"\n')
    settings = load_settings(path, environ={"MAILBOT_SMTP__PORT": "2700"})
    assert settings.support_address == "help@example.org"
    assert settings.smtp.host == "0.0.0.0"
    assert settings.smtp.port == 2700


def test_config_file_from_environment(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[lmtp]\nenabled = true\n")
    assert load_settings(environ={"MAILBOT_CONFIG": str(path)}).lmtp.enabled is True


def test_aliases_from_environment_json_or_commas():
    assert load_settings(environ={"MAILBOT_SUPPORT_ALIASES": '["A@x.org"]'}).support_aliases == (
        "a@x.org",
    )
    assert load_settings(
        environ={"MAILBOT_SUPPORT_ALIASES": "a@x.org, b@y.org"}
    ).our_addresses == frozenset({"support@localhost", "a@x.org", "b@y.org"})


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MAILBOT_SMTP__PORT": "many"}, "smtp.port"),
        ({"MAILBOT_SMTP__PORT": "70000"}, "smtp.port"),
        ({"MAILBOT_SUPPORT_ADDRESS": "not an address"}, "support_address"),
        ({"MAILBOT_SUPPORT_ADDRESS": "a@b.c\r\nBcc: x@y.z"}, "support_address"),
        ({"MAILBOT_TICKETS__TOKEN_FORMAT": "{number}"}, "tickets.token_format"),
        ({"MAILBOT_TICKETS__DEFAULT_PRIORITY": "urgent"}, "tickets.default_priority"),
        ({"MAILBOT_DATABASE_URL": "mysql://x"}, "database_url"),
        ({"MAILBOT_SMTP__NOSUCH": "1"}, "smtp.nosuch"),
        ({"MAILBOT_NOSUCH__A__B": "1"}, "MAILBOT_NOSUCH__A__B"),
    ],
)
def test_errors_name_the_setting(environ, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(environ=environ)


def test_bad_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[smtp]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"smtp\.prot"):
        load_settings(unknown, environ={})


def test_masked_hides_the_database_password():
    settings = load_settings(
        environ={"MAILBOT_DATABASE_URL": "postgresql+psycopg://bot:s3cr%40t@db/mailbot"}
    )
    shown = masked(settings)
    assert "s3cr" not in str(shown)
    assert shown["database_url"] == "postgresql+psycopg://bot:***@db/mailbot"


def test_example_file_is_complete_and_valid():
    example = ROOT / "mailbot.example.toml"
    settings = load_settings(example, environ={})
    assert settings == Settings()
    text = example.read_text()
    for name in setting_names():
        assert name.rsplit(".", 1)[-1] + " =" in text, name

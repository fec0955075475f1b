"""Settings: one TOML file, overridden by ``MAILBOT_*`` environment variables.

Loading and validation only, with no side effects. The entry point loads the
settings once and passes them down; nothing else reads the environment.

Environment overrides name the setting with ``__`` between section and key:
``MAILBOT_DATABASE_URL``, ``MAILBOT_SMTP__PORT=2526``. List values are given as
JSON (``MAILBOT_SUPPORT_ALIASES='["help@example.com"]'``) or comma-separated.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailbot.errors import ConfigError
from mailbot.message import ParseLimits

ENV_PREFIX = "MAILBOT_"
CONFIG_ENV = "MAILBOT_CONFIG"
_ADDRESS = re.compile(r"^[^@\s<>\"(),;:\\\[\]]+@[A-Za-z0-9.-]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Section):
    enabled: bool = Field(True, description="Serve SMTP for inbound mail.")
    host: str = Field("127.0.0.1", description="Address the SMTP listener binds to.")
    port: int = Field(2525, ge=0, le=65535, description="Port of the SMTP listener.")
    hostname: str = Field("", description="Name in the SMTP banner; empty for the host name.")
    max_message_size: int = Field(
        25 * 1024 * 1024, gt=0, description="Largest accepted mail in bytes; larger gets 552."
    )
    max_recipients: int = Field(100, gt=0, description="Most RCPT TO per transaction.")
    timeout: int = Field(120, gt=0, description="Seconds of client silence before hanging up.")


class LmtpSettings(_Section):
    enabled: bool = Field(False, description="Serve LMTP (for Postfix or Exim delivery).")
    host: str = Field("127.0.0.1", description="Address the LMTP listener binds to.")
    port: int = Field(2424, ge=0, le=65535, description="Port of the LMTP listener.")


class InboxSettings(_Section):
    max_attempts: int = Field(3, ge=1, description="Tries before a mail is quarantined.")
    lease_seconds: int = Field(
        600, gt=0, description="A claim older than this is stale and taken back at start-up."
    )
    retry_seconds: int = Field(
        30, gt=0, description="Wait before the first retry after a temporary failure; doubles."
    )
    poll_seconds: float = Field(
        2.0, gt=0, description="How often the worker looks for mail it was not woken for."
    )


class ParseSettings(_Section):
    max_parts: int = Field(500, gt=0, description="Most MIME parts in one mail.")
    max_depth: int = Field(30, gt=0, description="Deepest multipart nesting.")
    max_header_bytes: int = Field(256 * 1024, gt=0, description="Largest header block in bytes.")
    max_decoded_bytes: int = Field(
        50 * 1024 * 1024, gt=0, description="Most decoded payload bytes in one mail."
    )
    max_text_chars: int = Field(
        2 * 1024 * 1024, gt=0, description="Longest stored text body; longer is truncated."
    )

    def limits(self) -> ParseLimits:
        return ParseLimits(
            max_parts=self.max_parts,
            max_depth=self.max_depth,
            max_header_bytes=self.max_header_bytes,
            max_decoded_bytes=self.max_decoded_bytes,
            max_text_chars=self.max_text_chars,
        )


class OutgoingSettings(_Section):
    relay_host: str = Field("", description="SMTP relay for outgoing mail; empty writes a Maildir.")
    relay_port: int = Field(25, ge=1, le=65535, description="Port of the SMTP relay.")
    relay_tls: Literal["none", "starttls", "tls"] = Field(
        "none", description="TLS to the relay: none, STARTTLS (required), or implicit TLS."
    )
    relay_username: str = Field("", description="User for SMTP AUTH at the relay; empty for none.")
    relay_password_file: str = Field(
        "", description="File holding the relay password (never the password itself)."
    )
    relay_timeout: int = Field(60, gt=0, description="Seconds before a relay conversation fails.")
    retry_hours: int = Field(
        48, gt=0, description="How long temporary failures are retried before giving up."
    )
    maildir: str = Field(
        "", description="Maildir for outgoing mail when no relay is set; default DATA_DIR/outgoing."
    )


class TicketSettings(_Section):
    token_format: str = Field(
        "[#{number}]", description="How a ticket number appears in subjects; must hold {number}."
    )
    default_priority: Literal["critical", "high", "medium", "low"] = Field(
        "medium", description="Priority of a new ticket before rules run."
    )
    default_category: str = Field("other", description="Category of a new ticket before rules.")

    @field_validator("token_format")
    @classmethod
    def _has_number(cls, value: str) -> str:
        if value.count("{number}") != 1 or not value.replace("{number}", "").strip():
            raise ValueError("must contain {number} once, with some text around it")
        return value


class Settings(_Section):
    """Every setting of mailbot, with its default."""

    data_dir: Path = Field(Path("./var"), description="Where the database, attachments live.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; default sqlite:///DATA_DIR/mailbot.db."
    )
    support_address: str = Field("support@localhost", description="The address customers write to.")
    support_aliases: tuple[str, ...] = Field(
        (), description="Other addresses that are ours (accepted, never answered)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level written to the log."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    smtp: SmtpSettings = SmtpSettings()
    lmtp: LmtpSettings = LmtpSettings()
    inbox: InboxSettings = InboxSettings()
    parse: ParseSettings = ParseSettings()
    outgoing: OutgoingSettings = OutgoingSettings()
    tickets: TicketSettings = TicketSettings()

    @field_validator("support_address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError(f"not a mail address: {value!r}")
        return value.lower()

    @field_validator("support_aliases")
    @classmethod
    def _valid_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _ADDRESS.match(item):
                raise ValueError(f"not a mail address: {item!r}")
        return tuple(item.lower() for item in value)

    @field_validator("database_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if value and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError("must start with sqlite:// or postgresql+psycopg://")
        return value

    # -- derived values -----------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mailbot.db').resolve()}"

    @property
    def attachment_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def outgoing_maildir(self) -> Path:
        return Path(self.outgoing.maildir) if self.outgoing.maildir else self.data_dir / "outgoing"

    @property
    def our_addresses(self) -> frozenset[str]:
        return frozenset((self.support_address, *self.support_aliases))


def setting_names(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Dotted names of every leaf setting, e.g. ``smtp.port`` (used by the docs test)."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            names.extend(setting_names(annotation, f"{prefix}{name}."))
        else:
            names.append(f"{prefix}{name}")
    return names


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    sections = {
        n
        for n, f in Settings.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, _Section)
    }
    result: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        value: Any = raw
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: not valid JSON: {exc}") from exc
        elif path[-1] == "support_aliases":
            value = [p.strip() for p in raw.split(",") if p.strip()]
        if len(path) == 2 and path[0] in sections:
            result.setdefault(path[0], {})[path[1]] = value
        elif len(path) == 1:
            result[path[0]] = value
        else:
            raise ConfigError(
                f"{key}: unknown setting (sections use '__', e.g. MAILBOT_SMTP__PORT)"
            )
    return result


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (``path``, else ``$MAILBOT_CONFIG``, else none) and the environment.

    Raises ConfigError naming every invalid setting.
    """
    env = os.environ if environ is None else environ
    file_path = path or env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if file_path:
        try:
            with open(file_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {file_path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(env))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"])
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as a dict, with credentials in URLs masked."""
    data = settings.model_dump(mode="json")
    data["database_url"] = re.sub(
        r"//([^:/@]+):[^@]*@", r"//\1:***@", settings.effective_database_url
    )
    return data

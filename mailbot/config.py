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
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
    workers: int = Field(
        2,
        ge=1,
        le=8,
        description="Pipeline worker threads; one sender's or thread's mail stays in order.",
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
    processes: int = Field(
        1,
        ge=0,
        le=8,
        description="Parser child processes of the pipeline; 0 parses in the worker itself.",
    )
    timeout_seconds: float = Field(
        60.0, gt=0, description="Longest wait for a parser child's answer before it is killed."
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
    retry_first_seconds: int = Field(
        60, gt=0, description="Wait before the first retry; it doubles, up to an hour."
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


_PRIORITIES = ("critical", "high", "medium", "low")


def _check_priority_table(value: dict[str, float]) -> dict[str, float]:
    missing = [p for p in _PRIORITIES if p not in value]
    unknown = [p for p in value if p not in _PRIORITIES]
    if missing or unknown:
        raise ValueError(f"needs exactly the priorities {', '.join(_PRIORITIES)}")
    if any(v <= 0 for v in value.values()):
        raise ValueError("hours must be positive")
    return value


class SlaSettings(_Section):
    first_response: dict[str, float] = Field(
        default_factory=lambda: {"critical": 1.0, "high": 4.0, "medium": 8.0, "low": 24.0},
        description="Hours to the first response, per priority.",
    )
    resolution: dict[str, float] = Field(
        default_factory=lambda: {"critical": 4.0, "high": 8.0, "medium": 24.0, "low": 48.0},
        description="Hours to resolution, per priority.",
    )

    reminder_share: float = Field(
        0.75, gt=0, lt=1, description="Remind the assignee at this share of the time to a due."
    )
    calendar: dict[str, Any] = Field(
        default_factory=dict,
        description="Business hours the SLA clock runs in; empty: around the clock.",
    )
    priority_calendars: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Calendars per priority (win over team calendars)."
    )
    team_calendars: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Calendars per team of agents.yaml."
    )

    _first = field_validator("first_response")(_check_priority_table)
    _resolution = field_validator("resolution")(_check_priority_table)

    @field_validator("priority_calendars")
    @classmethod
    def _known_priorities(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = [p for p in value if p not in _PRIORITIES]
        if unknown:
            raise ValueError(f"unknown priorities {unknown}")
        return value


class JobSettings(_Section):
    """The scheduled jobs of ``mailbot run`` (issue #7; docs/jobs.md)."""

    enabled: bool = Field(True, description="Run the scheduled jobs inside mailbot run.")
    interval_seconds: float = Field(60, gt=0, description="Seconds between two runs of each job.")
    pending_reminder_days: float = Field(
        3, gt=0, description="Remind the customer of a pending ticket after this many days."
    )
    pending_close_days: float = Field(
        7, gt=0, description="Close a pending ticket after this many days without an answer."
    )
    resolved_close_days: float = Field(
        3, gt=0, description="Close a resolved ticket after this many days without an answer."
    )
    digest: bool = Field(True, description="Send managers the daily digest.")
    digest_time: str = Field(
        "08:00", description="Local time (each manager's time zone) the digest is sent at."
    )
    at_risk_hours: float = Field(
        2, gt=0, description="A ticket due within this many hours is at risk (digest)."
    )
    orphan_hours: float = Field(
        24, gt=0, description="Delete attachment files no message refers to after this long."
    )

    @field_validator("digest_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("must be HH:MM (24-hour clock)")
        return value


class ConversationSettings(_Section):
    unknown_sender: Literal["new_linked", "append"] = Field(
        "new_linked",
        description="A reply from a non-participant: open a linked ticket, or append to it.",
    )
    reopen_days: float = Field(
        7, ge=0, description="Replies to a closed ticket within this many days reopen it."
    )
    plus_addressing: bool = Field(True, description="Thread mail sent to support+N@ to ticket N.")
    language: Literal["auto", "en", "ru"] = Field(
        "auto", description="Language of customer mail; auto detects it from the first mail."
    )
    auto_reply_limit: int = Field(
        5, ge=0, description="Most automatic mails to one address per hour."
    )
    max_cc_participants: int = Field(
        20, ge=0, description="Most Cc addresses of a new ticket's mail made participants."
    )
    secret_key_file: str = Field(
        "", description="Key that signs Message-IDs and status links; default DATA_DIR/secret.key."
    )
    templates_dir: str = Field(
        "", description="Folder whose mail templates override the built-in ones."
    )
    public_url: str = Field(
        "http://127.0.0.1:8025", description="Base URL of the status page in customer mail."
    )
    team_name: str = Field("Support", description="Display name of the support address.")
    status_link_days: int = Field(180, gt=0, description="How long a status link stays valid.")
    satisfaction_survey: bool = Field(
        True, description="Closing mail asks the customer to rate the help from 1 to 5."
    )

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class DeskSettings(_Section):
    """Agents working from their mail client (issue #5; docs/commands.md, docs/agents.md)."""

    trusted_authserv_id: str = Field(
        "",
        description=(
            "authserv-id of our receiving server's Authentication-Results; when set, agent "
            "commands need an aligned DKIM or SPF pass there."
        ),
    )
    commands_in_fresh_mail: bool = Field(
        False,
        description="Run an agent's commands in mail that does not answer a notification.",
    )
    receipts: Literal["always", "errors"] = Field(
        "errors", description="Mail the agent a receipt for accepted commands, or only errors."
    )
    notify_unassigned: Literal["team", "none"] = Field(
        "team",
        description="Unassigned tickets notify their team (all active agents when no team).",
    )
    agent_language: Literal["en", "ru"] = Field(
        "en", description="Language of mail to agents who have none in agents.yaml."
    )


class WebSettings(_Section):
    """The read-only status page, JSON API and metrics (issue #8; docs/web.md)."""

    enabled: bool = Field(True, description="Serve the web page, JSON API and /metrics.")
    host: str = Field("127.0.0.1", description="Address the web server binds to.")
    port: int = Field(8025, ge=0, le=65535, description="Port of the web server.")
    session_hours: float = Field(
        12.0, gt=0, description="How long a staff login lasts before it must be repeated."
    )
    page_size: int = Field(50, ge=1, le=500, description="Tickets per page of the ticket list.")


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ImapMailboxSettings(_Section):
    """One ``[[imap]]`` mailbox read by the IMAP poller (issue #4; docs/imap.md)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="Short name of the mailbox: the inbox source is imap:<name>.",
    )
    host: str = Field(description="IMAP server host name (checked against its certificate).")
    port: int = Field(993, ge=1, le=65535, description="IMAP server port (993 TLS, 143 STARTTLS).")
    tls: Literal["tls", "starttls", "none"] = Field(
        "tls", description="Implicit TLS, STARTTLS (required), or none (loopback only)."
    )
    ca_file: str = Field(
        "", description="Extra CA or self-signed certificate (PEM) to trust for this server."
    )
    username: str = Field(description="IMAP login name.")
    password_file: str = Field("", description="File holding the password (first line).")
    password_env: str = Field("", description="Environment variable holding the password.")
    folders: tuple[str, ...] = Field(("INBOX",), min_length=1, description="Folders to read.")
    processed_action: Literal["move", "flag"] = Field(
        "move", description="After the commit: move the mail to processed_folder, or flag it."
    )
    processed_folder: str = Field("Processed", description="Where processed mail is moved.")
    processed_flag: str = Field(
        "$MailbotProcessed", description="Keyword set on processed mail when flagging."
    )
    oversize_folder: str = Field("Oversize", description="Where too large mail is moved.")
    max_message_size: int = Field(
        25 * 1024 * 1024, gt=0, description="Larger mail (RFC822.SIZE) stays on the server."
    )
    idle: bool = Field(True, description="Use IDLE when the server offers it, else poll.")
    poll_seconds: float = Field(60.0, gt=0, description="Seconds between polls without IDLE.")
    idle_seconds: float = Field(
        600.0, gt=0, le=1740, description="Seconds before an IDLE is renewed."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds before a silent server times out.")
    batch_size: int = Field(50, gt=0, le=1000, description="Messages fetched per FETCH.")
    lease_seconds: float = Field(
        60.0, gt=0, description="Lease of a poller on its mailbox; renewed at a third of it."
    )
    retry_max_seconds: float = Field(
        300.0, gt=0, description="Longest wait between reconnection attempts; doubles from 1s."
    )

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(f"not an environment variable name: {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImapMailboxSettings:
        if bool(self.password_file) == bool(self.password_env):
            raise ValueError(f"imap {self.name}: set exactly one of password_file, password_env")
        if self.tls == "none" and self.host not in _LOOPBACK_HOSTS:
            raise ValueError(f"imap {self.name}: tls = none is allowed only for a loopback host")
        for folder in self.folders:
            if folder in (self.processed_folder, self.oversize_folder):
                raise ValueError(f"imap {self.name}: folder {folder!r} is also a target folder")
        return self


def imap_password(mailbox: ImapMailboxSettings, environ: Mapping[str, str] | None = None) -> str:
    """The password of ``mailbox``, read now from its file or environment variable.

    Raises ConfigError naming the file or variable (never the password).
    """
    if mailbox.password_env:
        env = os.environ if environ is None else environ
        value = env.get(mailbox.password_env)
        if not value:
            raise ConfigError(f"imap {mailbox.name}: ${mailbox.password_env} is not set")
        return value
    try:
        lines = Path(mailbox.password_file).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(
            f"imap {mailbox.name}: cannot read password_file: {exc.strerror}"
        ) from None
    if not lines or not lines[0]:
        raise ConfigError(f"imap {mailbox.name}: password_file {mailbox.password_file} is empty")
    return lines[0]


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
    rules_file: str = Field(
        "rules.yaml", description="The rules; when the default file is absent, the built-in rules."
    )
    agents_file: str = Field("", description="agents.yaml with agents and teams; empty for none.")
    smtp: SmtpSettings = SmtpSettings()
    lmtp: LmtpSettings = LmtpSettings()
    inbox: InboxSettings = InboxSettings()
    parse: ParseSettings = ParseSettings()
    outgoing: OutgoingSettings = OutgoingSettings()
    tickets: TicketSettings = TicketSettings()
    imap: tuple[ImapMailboxSettings, ...] = Field(
        (), description="Mailboxes read by the IMAP poller ([[imap]] tables)."
    )
    sla: SlaSettings = SlaSettings()
    conversation: ConversationSettings = ConversationSettings()
    desk: DeskSettings = DeskSettings()
    jobs: JobSettings = JobSettings()
    web: WebSettings = WebSettings()

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

    @field_validator("imap")
    @classmethod
    def _unique_mailboxes(
        cls, value: tuple[ImapMailboxSettings, ...]
    ) -> tuple[ImapMailboxSettings, ...]:
        names = [m.name for m in value]
        if len(set(names)) != len(names):
            raise ValueError("imap mailbox names must be unique")
        return value

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
    def secret_key_path(self) -> Path:
        key = self.conversation.secret_key_file
        return Path(key) if key else self.data_dir / "secret.key"

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
        elif name == "imap" and model is Settings:  # a list of tables: imap.<key>
            names.extend(setting_names(ImapMailboxSettings, f"{prefix}{name}."))
        else:
            names.append(f"{prefix}{name}")
    return names


def _is_collection(path: list[str]) -> bool:
    """Whether the setting at ``path`` holds a list, tuple or table (given as JSON)."""
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        field = model.model_fields.get(part)
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return True  # let validation name the unknown setting
        model = field.annotation
    field = model.model_fields.get(path[-1])
    if field is None:
        return True
    return typing.get_origin(field.annotation) in (list, tuple, dict)


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
        if stripped.startswith(("[", "{")) and _is_collection(path):
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

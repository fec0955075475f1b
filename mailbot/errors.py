"""The exception tree of mailbot.

Names say what the caller should do::

    MailbotError
     ├── ConfigError              the configuration is invalid: fix it, then start again
     ├── SchemaError              the database is not at the code's schema: run `mailbot db upgrade`
     ├── ClaimLostError           another worker owns this inbox row now: drop the work
     ├── TransientError           retry later (database down, disk full, ...)
     │    └── StorageUnavailableError
     └── PermanentError           this input will never work: quarantine it
          ├── ParseError          the mail cannot be read
          │    └── LimitExceededError   a size, depth or count limit was hit
          └── TicketNotFoundError

Outcomes such as "duplicate" or "spam" are values, never exceptions.
"""

from __future__ import annotations


class MailbotError(Exception):
    """Base of every error mailbot raises on purpose."""


class ConfigError(MailbotError):
    """The configuration is invalid; the message names the setting."""


class SchemaError(MailbotError):
    """The database schema is not the one this code needs."""


class ClaimLostError(MailbotError):
    """The inbox row was taken back from this worker (its lease expired)."""


class TransientError(MailbotError):
    """A failure that may go away: the caller should retry later."""


class StorageUnavailableError(TransientError):
    """The database could not be reached or refused the write."""


class PermanentError(MailbotError):
    """A failure that retrying will not fix: the item is quarantined."""


class ParseError(PermanentError):
    """The raw mail cannot be turned into a message."""


class LimitExceededError(ParseError):
    """A mail exceeded one of the parsing limits (parts, depth, header or decoded size)."""


class TicketNotFoundError(PermanentError):
    """No ticket has the number asked for."""

"""The secret key that signs Message-IDs and status links, kept in a file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create(path: Path) -> bytes:
    """Read the key, creating it (mode 0600) on first use.

    The key is written to a temporary file and hard-linked into place, which
    fails if the file exists: two processes starting together end up with the
    same, complete key.
    """
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(KEY_BYTES) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path}: the secret key is too short (at least 32 characters)")
    return text.encode()

"""Attachment files, stored by content hash under the data directory.

A file's name is the SHA-256 of its bytes, in two levels of sub-folders:
``attachments/ab/cd/abcd...``. Names from mail never become paths. The same
content is stored once however often it arrives.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, payload: bytes) -> str:
        """Store ``payload`` (once) and return its key.

        Written to a temporary file in the target folder, then renamed, so a
        crash never leaves a half-written blob under a valid key.
        """
        key = hashlib.sha256(payload).hexdigest()
        target = self.path_for(key)
        if target.exists():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

"""Files the integrations write for people and other processes to read (the outboxes)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file in the same folder,
    flushed to disk, then renamed over ``path`` (a reader never sees half a file)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def json_documents(folder: str | Path) -> list[tuple[Path, Any]]:
    """The ``.json`` files of an outbox folder and what they hold, oldest first (their names
    start with the time); hidden files (a write in progress) are left out, and a folder never
    written to is empty."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return [
        (path, json.loads(path.read_text()))
        for path in sorted(root.glob("*.json"))
        if not path.name.startswith(".")
    ]

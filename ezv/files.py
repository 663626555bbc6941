"""Files that a reader, or a kill in the middle of a write, never sees half written."""

from __future__ import annotations

import os


def write_atomic(path: str, text: str) -> None:
    """Write a text file so that a reader (or a kill) never sees it half written."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

"""The one atomic file writer: pages, feeds, digest web views and previews all go
through `write_atomic`, so a reader (the web server, a feed reader, rsync) sees the
old bytes or the new ones, never half a file.

The temporary file has a unique name in the target's folder (`mkstemp`: two
processes or chunks writing the same path never share one, as a fixed `.tmp` name
did), is flushed and fsynced before the rename, and the rename is `os.replace`
(atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(
    path: str | os.PathLike[str], data: bytes | str, *, encoding: str = "utf-8", mode: int = 0o644
) -> None:
    """Replace `path` with `data` (str is encoded), creating its folder if needed.
    `mode` is set before the rename: a secret (0o600) is never readable by others."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; published files are world-readable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

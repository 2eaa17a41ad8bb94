"""The one atomic file writer: pages, feeds, digest web views and previews all go
through `write_atomic`, so a reader (the web server, a feed reader, rsync) sees the
old bytes or the new ones, never half a file.

The temporary file has a unique name in the target's folder (`mkstemp`: two
processes or chunks writing the same path never share one, as a fixed `.tmp` name
did), is flushed and fsynced before the rename, and the rename is `os.replace`
(atomic on POSIX) (FILE-1).

`StagedWrites` gives the same guarantee to a batch of files (a site build) with one
file-system sync for the batch instead of one fsync per file (FILE-2).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from pathlib import Path


def folder_names(folder: str | os.PathLike[str], suffix: str | tuple[str, ...]) -> list[str]:
    """The names of the entries of `folder` that end with `suffix` (or one of them),
    sorted (what `sorted(Path(folder).glob("*" + suffix))` gives, hidden files
    included); none when `folder` does not exist or is not a folder. One `scandir` and
    a sort of strings: no Path per entry (ingest lists 10,000 articles on every run).

    A folder that exists but cannot be listed raises its OSError (PermissionError,
    EIO): pathlib's glob returns nothing for it, and a caller that treats "no files"
    as "everything was removed" (ingest retracting every article, the scheduler
    dropping every job) must not be told that."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.endswith(suffix))
    except (FileNotFoundError, NotADirectoryError):
        return []


def folder_entries(folder: str | os.PathLike[str], suffix: str | tuple[str, ...]) -> list[Path]:
    """`folder_names` as paths under `folder` (the same errors)."""
    return [Path(folder) / name for name in folder_names(folder, suffix)]


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


class StagedWrites:
    """Many files replaced with one sync instead of one fsync each (FILE-2).

    `stage()` writes each file's bytes to a unique temporary file beside its target
    (no fsync); `publish()` flushes them all to disk with one `syncfs` of the target's
    file system (`os.sync` where there is none), then renames each over its target.
    The guarantee is `write_atomic`'s: a reader, or a machine that lost power, sees
    the old bytes or the new ones, never half a file, because no rename happens before
    the data is on disk. `discard()` (or leaving the `with` block on an error) removes
    the temporary files and touches no target.

    Temporary names can be made in a forked worker and published by the parent:
    `stage()` returns the temporary path, `adopt()` takes it over.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._pending: list[tuple[str, str | os.PathLike[str]]] = []

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.discard()  # published already on success; on an error nothing is renamed

    def __len__(self) -> int:
        return len(self._pending)

    def stage(self, path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> str:
        tmp = write_temporary(path, data, mode=mode)
        self.adopt(tmp, path)
        return tmp

    def adopt(self, tmp: str, path: str | os.PathLike[str]) -> None:
        """Take over a temporary file made by `write_temporary` (in a worker process)."""
        self._pending.append((tmp, path))  # as given: a str costs nothing to keep, 13,000 Paths did

    def publish(self) -> int:
        """Sync once, then rename every staged file over its target; -> how many."""
        if not self._pending:
            return 0
        sync_filesystem(self.root)
        pending, self._pending = self._pending, []
        for tmp, path in pending:
            os.replace(tmp, path)
        return len(pending)

    def discard(self) -> None:
        pending, self._pending = self._pending, []
        for tmp, _path in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


_temporaries = itertools.count()


def write_temporary(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> str:
    """`data` in a new temporary file beside `path` (not synced, not renamed); -> its path.

    The name is `.<name>.<pid>.<n>.tmp`, created with O_EXCL (never an existing file,
    whoever made it); the folder is created only when the open finds it missing. A
    build writes thousands of these: a mkdir and a random name per file were a
    sixth of a full build's time."""
    path = Path(path)
    parent = path.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(parent, f".{path.name}.{os.getpid()}.{next(_temporaries)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:  # left by a crashed process with the same pid: take another name
            continue
        except FileNotFoundError:
            parent.mkdir(parents=True, exist_ok=True)
            continue
        break
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)  # published files are world-readable, whatever the umask
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Flush every dirty page of the file system holding `path` to disk: Linux
    `syncfs(2)`, one journal commit for any number of files; else `os.sync()`."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:  # pragma: no cover - syncfs fails only on a bad fd
            os.sync()
    finally:
        os.close(fd)

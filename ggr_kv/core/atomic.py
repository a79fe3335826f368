"""The one way this package writes a file: whole or not at all.

Every writer (plans, prompts, run folders' JSON/Parquet/CSV, figures, sweep state and
lock, generated datasets, model folders) goes through `write_atomic` or `atomic_path`:
the bytes go to a temporary file in the same folder, are flushed to disk (``fsync``),
and the file is renamed into place; the folder is synced after the rename. A reader
sees the old file or the new one, never a cut-off one; a full disk leaves the old file
as it was and raises `WriteError` naming the file.

``overwrite=False`` publishes with a hard link, which fails if the name exists: the
content is complete before the name is visible (also how a lock file is created).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["WriteError", "atomic_path", "fsync_dir", "write_atomic"]


class WriteError(OSError):
    """A file could not be written (disk full, no permission, ...); ``filename`` is the
    file that was being written, and the message names it and the cause on one line."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        why = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno or errno.EIO, f"{path}: could not write it ({why})")
        self.filename = str(path)

    def __str__(self) -> str:
        return str(self.args[1])


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{id(path) & 0xFFFF:x}.tmp")


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and fails if ``path`` exists
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path}: already exists; not overwriting") from None
    except OSError as e:  # a filesystem without hard links: rename after a check
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, f"{path}: already exists; not overwriting") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a path
    (``df.to_parquet(tmp)``, ``fig.savefig(tmp)``); on normal exit it is synced and
    renamed to ``path``; on any error it is removed and ``path`` is left as it was.

    Raises `WriteError` (naming ``path``) for a disk error, `FileExistsError` when
    ``overwrite=False`` and ``path`` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(errno.EEXIST, f"{path}: already exists; not overwriting")
    tmp = _temp_name(path)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _publish(tmp, path, overwrite)
        except FileExistsError:
            raise
        except OSError as e:
            if isinstance(e, WriteError):
                raise
            raise WriteError(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)


def write_atomic(
    path: str | Path,
    data: str | bytes | Callable[[Path], object],
    *,
    overwrite: bool = True,
    encoding: str = "utf-8",
) -> Path:
    """Write ``data`` (text, bytes, or a function that writes a given path) to ``path``
    whole; see `atomic_path`. Returns ``path``."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        if callable(data):
            data(tmp)
        else:
            raw = data.encode(encoding) if isinstance(data, str) else data
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
    return path

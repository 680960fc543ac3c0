"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import contextlib
import os
import secrets


@contextlib.contextmanager
def open_atomically(path, mode: str = "w"):
    """Opens a temporary file next to ``path`` for writing (``mode`` "w" or "wb"); when the
    block ends without an error, flushes it to disk and renames it onto ``path``.

    An interruption or an error at any point leaves ``path`` as it was (absent or the old
    content) and no temporary file behind.
    """
    target = os.fsdecode(path)
    folder, name = os.path.split(os.path.abspath(target))
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never follow a planted link; 0o666 lets the umask decide, as open() would.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise

"""Writing output files so that a reader never sees half of one."""

from __future__ import annotations

from snncompiler.runtime.files import open_atomically


def write_text_atomically(path, text: str) -> None:
    """Writes ``text`` to a temporary file next to ``path``, then renames it into place.

    An interruption at any point leaves ``path`` as it was (absent or the old content) and
    no temporary file behind (see :func:`snncompiler.runtime.files.open_atomically`).
    """
    with open_atomically(path, "w") as stream:
        stream.write(text)

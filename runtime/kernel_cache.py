"""Keeps numba's on-disk cache of the runtime's kernels in step with all of their sources.

numba checks a cached function against the file that defines it, and nothing else: a
change to a function of another file that it calls (and inlines) goes unseen, and the old
machine code keeps running. The runtime's kernels do that on purpose (``kernels._execute``
inlines the conv, neuron and pooling kernels of five other modules), so editing
``pointwise.py`` alone, or pulling a commit that changes only it, would run the previous
version without a word. :func:`drop_stale` keys the cache on every source file of the
package instead: when any of them changes, the package's cached kernels are deleted and
numba compiles them again (a minute, once).

Only the cache beside the sources (``__pycache__``, numba's choice for a writable package,
as a checkout is) is handled; an installed package changes only by reinstalling, which
gives every file a new time stamp and so invalidates its cache anyway.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

STAMP = "snncompiler-sources.sha256"


def sources_digest(package: Path) -> str:
    """SHA-256 over the names and contents of the package's ``.py`` files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def drop_stale(package: Path) -> bool:
    """Deletes the package's cached numba kernels (``__pycache__/*.nbi``, ``*.nbc``) if its
    sources changed since the cache was last checked; returns whether it did. Never raises
    for a cache it cannot read or write: numba then compiles or caches as it can."""
    cache = package / "__pycache__"
    stamp = cache / STAMP
    try:
        digest = sources_digest(package)
    except OSError:
        return False
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass  # no stamp yet: whatever is cached predates this check
    try:
        for cached in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            cached.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass  # a read-only package: nothing of ours to keep in step
    return True

"""Atomic file writes: readers never see a partial file under its final name.

A module of its own (no torch, no safetensors) so that plain image IO, FITS writing and the
trainer share one implementation without importing each other's dependencies.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    The temporary file ``.NAME.*.tmp`` sits in the target folder (created when missing), so the
    rename is atomic; it gets the usual permissions (0666 minus the umask) and is removed when
    ``write_fn`` raises.

    >>> with tempfile.TemporaryDirectory() as folder:
    ...     atomic_write(Path(folder) / "a.txt", lambda tmp: Path(tmp).write_text("done"))
    ...     print((Path(folder) / "a.txt").read_text())
    done
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

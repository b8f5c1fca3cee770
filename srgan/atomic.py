"""Atomic file writes: readers never see a partial file under its final name.

A module of its own (no torch, no safetensors) so that plain image IO, FITS writing and the
trainer share one implementation without importing each other's dependencies.

Temporary files are named ``.NAME.pidPID.XXXXXX.tmp``: they belong to the process PID, so
:func:`remove_stale_temps` deletes only those whose process is gone, and two runs writing
into one folder never delete each other's files in flight.
"""

from __future__ import annotations

import os
import re
import tempfile
from glob import escape as glob_escape
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
_PID = re.compile(r"\.pid(\d+)\.[^.]*\.tmp$")


def temp_prefix(path: Path) -> str:
    """The name prefix of this process's temporary files for ``path``."""
    return f".{path.name}.pid{os.getpid()}."


def atomic_write(path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    The temporary file ``.NAME.pidPID.*.tmp`` sits in the target folder (created when missing),
    so the rename is atomic; it gets the usual permissions (0666 minus the umask) and is
    removed when ``write_fn`` raises.

    >>> with tempfile.TemporaryDirectory() as folder:
    ...     atomic_write(Path(folder) / "a.txt", lambda tmp: Path(tmp).write_text("done"))
    ...     print((Path(folder) / "a.txt").read_text())
    done
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # unknown: keep its files
    return True


def remove_stale_temps(path) -> list[Path]:
    """Delete the temporary files that dead processes left for ``path``; returns them.

    A temp of a live process (this one included) is kept: it may be another run's write in
    flight. Temps without a pid (older srgan versions) are removed.
    """
    path = Path(path)
    removed = []
    for stale in path.parent.glob(glob_escape(f".{path.name}.") + "*.tmp"):
        m = _PID.search(stale.name[len(path.name) + 1:])
        if m and pid_alive(int(m.group(1))):
            continue
        try:
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass
    return removed

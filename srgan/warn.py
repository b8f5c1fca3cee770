"""One warning format: ``FILE: message`` on one line, for every warning a batch file causes.

:func:`file_warnings` collects the warnings raised while one file is processed and gives each
once, prefixed with that file; :func:`one_line` is the formatter the CLI installs so that
warnings print as ``Warning: FILE: message``, without source paths or ``UserWarning``.
"""

from __future__ import annotations

import contextlib
import warnings


class FileWarning(UserWarning):
    """A warning whose message already starts with the file it concerns (it may come from an
    I/O thread while another file is being upscaled, so it is never re-prefixed)."""


@contextlib.contextmanager
def file_warnings(path):
    """Within the block, warnings are collected; after it each distinct one is re-issued once as
    ``PATH: message`` (unless it already names the file)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if not issubclass(w.category, FileWarning) and not text.startswith(str(path)):
            text = f"{path}: {text}"
        if (text, w.category) in seen:
            continue
        seen.add((text, w.category))
        warnings.warn_explicit(text, w.category, w.filename, w.lineno)


def one_line(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` replacement: ``Warning: message`` on one line."""
    return f"Warning: {' '.join(str(message).split())}\n"

"""Errors a user can fix. Each message says what was expected and which option changes it.

Library code raises these; the CLI turns them into one ``Error:`` line and exit code 1.
"""


class SrganError(Exception):
    """Base class for every error srgan raises on purpose."""


class ConfigError(SrganError, ValueError):
    """An option or configuration value is invalid or inconsistent."""


class InputError(SrganError, ValueError):
    """An input file or array cannot be used (unreadable, wrong shape, too small, ...)."""


class ModelError(SrganError):
    """A model file or name cannot be loaded."""


class WeightsUnavailableError(SrganError):
    """Pretrained VGG19 weights are needed but cannot be obtained (offline, no local file)."""


class TrainingDivergedError(SrganError):
    """A loss became NaN or infinite; training stopped without saving the bad weights."""


class OutputError(SrganError):
    """An output cannot be written (disk full, I/O error) or would be wrong (non-finite pixels)."""


def describe(e: BaseException) -> str:
    """One line for an exception of one batch file: the message of srgan's and the OS's errors,
    the type as well for anything else (a bug or a limit that has no message of its own)."""
    if isinstance(e, (SrganError, OSError)):
        text = str(e)
    elif isinstance(e, MemoryError):
        text = f"out of memory ({e or 'allocation failed'}): try a smaller --tile"
    else:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return " ".join(text.split())  # one line

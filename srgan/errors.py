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

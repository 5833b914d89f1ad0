"""Every error a user can cause derives from :class:`DrFdslError`, so entry points catch one thing and print it.

Messages name the key, file or setting at fault and the fix. The kinds also derive from the built-in class their
earlier versions had (``ValueError`` or ``RuntimeError``), so code that caught those still catches them.
Programming errors (a wrong tensor shape passed by code) stay ordinary ``ValueError`` / ``TypeError`` and keep
their traceback.
"""


class DrFdslError(Exception):
    """Base of every user-facing error of the project."""


class ConfigError(DrFdslError, ValueError):
    """A configuration that cannot be used, with the key at fault and how to fix it."""


class BankError(DrFdslError, ValueError):
    """Settings that cannot produce a bank of point sets (with the fix in the message)."""


class BankCacheError(DrFdslError, RuntimeError):
    """A bank cache file that cannot be read back; delete it or rebuild."""


class CheckpointError(DrFdslError, RuntimeError):
    """A checkpoint that cannot be written or resumed from, or an output folder that would be overwritten."""


class DatasetError(DrFdslError, RuntimeError):
    """A static dataset folder that cannot be used as asked (with the reason and the fix)."""


class DataError(DrFdslError, RuntimeError):
    """A real dataset that cannot be found or read, with where it was looked for and how to get it."""


class NonFiniteLossError(DrFdslError, RuntimeError):
    """The loss became NaN or infinite; training stopped and no checkpoint was written after it."""


class IntegrityError(DrFdslError, RuntimeError):
    """A file whose content does not match what was recorded when it was written (damaged, truncated, swapped)."""

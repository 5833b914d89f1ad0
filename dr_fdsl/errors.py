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


# Words of the errors that storage faults become inside libraries: torch.save's zip writer ("file write failed",
# "PytorchStreamWriter failed writing file", "unexpected pos"), safetensors' SafetensorError ("IoError ..."), or
# an errno's text passed on in a message. Compared in lower case.
_STORAGE_WORDS = ("write failed", "failed writing", "unexpected pos", "ioerror", "no space left on device",
                  "file too large", "read-only file system", "disk quota exceeded", "input/output error")


def is_write_fault(err: BaseException) -> bool:
    """Whether ``err`` is storage failing (disk full, read-only, over a size limit, quota, I/O error) rather than a
    bug: any ``OSError``, an error raised from one (``raise ... from``; not one that merely happened while an OSError
    was handled: a library's bug there keeps its traceback), or a ``RuntimeError`` / ``SafetensorError`` whose text
    shows a failed write (``torch.save`` and safetensors do not raise ``OSError`` for these)."""
    if isinstance(err, OSError) or isinstance(err.__cause__, OSError):
        return True
    library = isinstance(err, RuntimeError) or type(err).__name__ == "SafetensorError"
    return library and any(w in str(err).lower() for w in _STORAGE_WORDS)

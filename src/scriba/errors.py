"""Exceptions that the command line turns into one-line messages.

Every error that a user can cause (a bad option, a bad file) derives from :class:`ScribaError`.
The CLI prints ``error: <message>`` and exits with :attr:`ScribaError.exit_code`; anything else is a bug
and shows a traceback only with ``-v``.
"""

from __future__ import annotations


class ScribaError(Exception):
    """A failure with a message fit for the user. Exit status 1."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, element: str | None = None):
        self.path = path
        self.element = element
        where = ""
        if path is not None:
            where = f"{path}"
            if element is not None:
                where += f" ({element})"
            where += ": "
        super().__init__(f"{where}{message}")


class UsageError(ScribaError):
    """A mistake in the options or the experiment file. Exit status 2."""

    exit_code = 2


class InputError(ScribaError):
    """Input data that cannot be read: a page, a line, a manifest entry, a dataset."""


class NoDataError(InputError):
    """A run that has nothing to work on once bad items were skipped."""


class ModelError(ScribaError):
    """A model or weights file that cannot be read or is not a recognition model."""


class CodecError(ScribaError):
    """An invalid codec definition (not singular, not prefix-free, bad labels)."""


class EncodeError(CodecError):
    """Text that a strict codec cannot represent; ``missing`` holds the offending characters."""

    def __init__(self, message: str, missing: set[str] | None = None, **kw):
        self.missing = set(missing or ())
        super().__init__(message, **kw)


class SpecError(ScribaError):
    """A VGSL specification that does not parse; the message names the block."""


def read_bytes(path: str, error: type[ScribaError], what: str, size: int = -1) -> bytes:
    """The first ``size`` bytes of ``path`` (all with -1); a file that cannot be opened or read raises
    ``error`` with the file's name: ``<path>: <what> cannot be read (<reason>)``."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise error(f"{what} cannot be read ({exc.strerror or exc})", path=str(path)) from None

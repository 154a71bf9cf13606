"""How ``ketos`` prints log records on stderr: ``warning: text``, with a prefix on DDP's other ranks."""

from __future__ import annotations

import logging
import sys

# third-party loggers that speak only with -v
_NOISY = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "fsspec", "PIL")


class ConsoleFormatter(logging.Formatter):
    """``<prefix><level>: <message>``; a Python warning shows its text, not the source line that raised it."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":
            # "file:line: Category: text" -> "text"
            parts = message.strip().splitlines()[0].split(": ", 2)
            message = parts[-1] if len(parts) == 3 else message
        return f"{self.prefix}{record.levelname.lower()}: {message}"


def setup_logging(verbose: int, *, prefix: str = "", level: int | None = None) -> None:
    """One stderr handler on the root logger at WARNING (INFO with ``-v``, DEBUG with ``-vv``), or ``level``;
    Python warnings go through it too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter(prefix))
    if level is None:
        level = logging.WARNING - min(10 * verbose, 20)
    # records propagated from other loggers skip the root's level, so the handler filters too
    handler.setLevel(level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)

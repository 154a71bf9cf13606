"""Write-to-temporary-then-rename, so that a failed write leaves nothing behind.

Temporaries live in the target's own directory (a rename within one filesystem is atomic; a copy from
``$TMPDIR`` is not) and carry the writer's PID, so that the ones a killed process left can be told from
those of a live one and removed (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from scriba.errors import ScribaError

logger = logging.getLogger(__name__)

# the temporaries of atomic_path and write_durably: ".<name>.<pid>.tmp"
TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp$")
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(ScribaError):
    """A file did not fit on its filesystem; the file it would have replaced is unchanged."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The temporary a write of ``path`` goes to before it is renamed into place."""
    target = Path(path)
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yields a temporary name next to ``path``; renames it to ``path`` only if the block succeeds."""
    target = Path(path)
    tmp = temporary_name(target)
    try:
        yield str(tmp)
        # Some writers (safetensors among them) create their file 0600; give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in _FULL:
            raise disk_full(target.parent, target.name, None) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def free_bytes(directory: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged writer may still use in ``directory``'s filesystem (None where unknown)."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def disk_full(directory: str | os.PathLike[str], what: str, needed: int | None) -> DiskFullError:
    free = free_bytes(directory)
    sizes = [f"it needs {megabytes(needed)}"] if needed is not None else []
    if free is not None:
        sizes.append(f"{megabytes(free)} free")
    return DiskFullError(
        f"no space left for {what} ({', '.join(sizes)}); earlier files there are kept", path=str(directory)
    )


def write_durably(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Writes ``data`` to ``path`` through a temporary in the same directory: written, fsynced, renamed.

    A crash or a kill at any moment leaves either the old file or the new one under ``path``, never a part.
    A full filesystem (checked before writing, and caught while writing) raises :class:`DiskFullError` naming
    the directory and the space needed; the temporary is removed and ``path`` is unchanged.
    """
    target = Path(path)
    directory = target.parent
    free = free_bytes(directory)
    if free is not None and free < len(data):
        raise disk_full(directory, target.name, len(data))
    tmp = temporary_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, memoryview(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in _FULL:
            raise disk_full(directory, target.name, len(data)) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _sync_directory(directory)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(directory: Path) -> None:
    # the rename itself is durable only once the directory is synced; not every system can open one
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(directory: str | os.PathLike[str], pattern: re.Pattern[str] = TEMPORARY) -> list[str]:
    """Removes the files in ``directory`` whose name matches ``pattern`` and whose ``pid`` group names a
    process that is gone (what a killed writer left); returns their paths, each one also logged."""
    removed: list[str] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m is None or pid_alive(int(m.group("pid"))):
            continue
        path = os.path.join(directory, name)
        try:
            size = os.path.getsize(path)
            os.unlink(path)
        except OSError:
            continue
        logger.warning("removed %s (%s), left behind by an interrupted run", path, megabytes(size))
        removed.append(path)
    return removed

"""Writing a file safely: atomic replacement and one writer per output path.

:func:`atomic_file` writes to a temporary file beside the target (``.<stem>.<pid>.tmp<suffix>``),
fsyncs it and renames it into place only when everything was written, so an interrupted write
never leaves a half-written file; :func:`output_lock` stops two processes from writing the same
path at once (``<path>.lock``, an exclusive ``flock``); :func:`remove_stale_temps` and
:func:`clear_stale_lock` clean up after writers that were killed. :func:`describe_os_error` turns
an operating-system error into the short cause that the one-line messages show.

The HDF5 artifacts of :mod:`microvae.artifacts` are written through these (``atomic_h5``); the
functions are re-exported there, their historical home.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

__all__ = ["atomic_file", "check_writable_location", "clear_stale_lock", "describe_os_error", "output_lock", "remove_stale_temps"]


def check_writable_location(path: str | Path) -> None:
    """Raise OutputError unless the folder that will hold ``path`` exists (or can be made) and is writable.

    Parameters
    ----------
    path : str or path
        The output to be written; its nearest existing ancestor folder is checked.

    Raises
    ------
    OutputError
        That ancestor is not a directory, or lacks write and search permission.
    """
    folder = Path(path).resolve().parent
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{path}: cannot create the output folder, {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output location {probe} is read-only (no write permission, or a read-only file system)")


def describe_os_error(error: OSError) -> str:
    """A short, user-facing cause for an operating-system error while writing: ``no space left on
    the device``, ``read-only file system``, ``permission denied (read-only location)``, else the
    system's own message (first line).

    Parameters
    ----------
    error : OSError
        The error.

    Returns
    -------
    str
        The cause (the system's message cut to 200 characters; the error's type name when empty).
    """
    import errno as _errno

    text = str(error)
    if error.errno in (_errno.ENOSPC, getattr(_errno, "EDQUOT", -1)) or "No space left" in text or "Disk quota" in text:
        return "no space left on the device"
    if error.errno == _errno.EROFS or "Read-only file system" in text:
        return "read-only file system"
    if error.errno in (_errno.EACCES, _errno.EPERM) or "Permission denied" in text:
        return "permission denied (read-only location)"
    lines = (error.strerror or text).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it into place on success.

    For outputs other than HDF5 artifacts (PNG previews, TIFF maps, JSON). On failure the temporary
    file is removed and ``path`` is unchanged.

    Parameters
    ----------
    path : str or path
        The output; its folder is made when missing, and stale temporary files of killed writers
        are removed from it.

    Yields
    ------
    Path
        The temporary file ``.<stem>.<pid>.tmp<suffix>`` beside ``path`` to write; it is fsynced
        and renamed onto ``path`` when the block ends without an error.

    Raises
    ------
    OutputError
        The folder cannot be made or is read-only, or the write failed (no space left, permission
        denied); ``path`` is unchanged and no temporary file is left.
    """
    path = Path(path)
    check_writable_location(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create its folder ({describe_os_error(error)})") from error
    temp = path.parent / f".{path.stem}.{os.getpid()}.tmp{path.suffix}"
    remove_stale_temps(path.parent, f".{path.stem}.", f".tmp{path.suffix}")
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, path)
    except OSError as error:
        _remove_quietly(temp)
        raise OutputError(f"{path}: cannot write ({describe_os_error(error)}); the previous file, if any, is unchanged") from error
    except BaseException:
        _remove_quietly(temp)
        raise


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _remove_quietly(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold ``<path>.lock`` (holding our pid) while writing ``path``.

    A second process that wants the same output is refused with a message naming the owner. A lock
    whose owner is no longer running (a crash, SIGKILL) is stale and is taken over.

    The lock file is held with an exclusive ``flock`` for as long as the output is written (the
    kernel releases it when the process dies, so a stale lock never blocks and two processes can
    never both take it over); its content, the owner's pid, is what the refusal names. A lock file
    holding the pid of a live process that does not hold the ``flock`` (another tool's, or a
    microvae without it) is respected too. Where ``fcntl`` is missing (Windows) the lock is the file's
    exclusive creation alone.

    Parameters
    ----------
    path : str or path
        The output to lock (the lock file is ``<path>.lock``, removed on exit).

    Yields
    ------
    None
        While the lock is held.

    Raises
    ------
    OutputError
        Another live process holds the lock, or the lock file cannot be written (read-only
        location, no space left).
    """
    lock = Path(str(path) + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        fcntl = None
    for _attempt in range(5):
        try:
            if fcntl is None:  # pragma: no cover
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            else:
                descriptor = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except FileExistsError:  # pragma: no cover (no fcntl)
            owner = _lock_owner(lock)
            if owner is not None and _pid_alive(owner) and owner != os.getpid():
                raise _lock_refusal(path, owner) from None
            _remove_quietly(lock)
            continue
        except OSError as error:
            raise OutputError(f"{path}: cannot create the lock file {lock} ({describe_os_error(error)})") from error
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise _lock_refusal(path, _owner_once_written(lock)) from None
                try:
                    current = os.stat(lock).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(descriptor).st_ino:  # the previous holder removed it meanwhile: retry
                    os.close(descriptor)
                    descriptor = -1
                    continue
                owner = _lock_owner(lock)
                if owner is not None and owner != os.getpid() and _pid_alive(owner):
                    raise _lock_refusal(path, owner)
                os.ftruncate(descriptor, 0)
            os.write(descriptor, str(os.getpid()).encode())
        except OutputError:
            os.close(descriptor)
            raise
        except OSError as error:
            if descriptor >= 0:
                os.close(descriptor)
            raise OutputError(f"{path}: cannot write the lock file {lock} ({describe_os_error(error)})") from error
        try:
            yield
        finally:
            _remove_quietly(lock)  # while still holding the flock: nobody can take a lock file we then delete
            os.close(descriptor)
        return
    raise OutputError(f"{path}: could not take the lock file {lock}")


def _lock_refusal(path: str | Path, owner: int | None) -> OutputError:
    who = f"pid {owner}" if owner is not None else "pid unknown"
    return OutputError(f"{path}: another microvae process ({who}) is writing this output (lock file {path}.lock); wait for it or choose another path")


def _owner_once_written(lock: Path, wait_s: float = 0.5) -> int | None:
    """The lock's owner pid; a holder that has just taken the flock may not have written it yet,
    so wait up to ``wait_s`` for it."""
    import time

    deadline = time.monotonic() + wait_s
    while (owner := _lock_owner(lock)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return owner


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path, prefix: str, suffix: str) -> None:
    """Remove the temporary files ``<prefix><pid><suffix>`` in ``folder`` whose writer is no longer
    running: a process killed mid-write (SIGKILL, power loss) cannot clean up, and its pid-named
    temporary file would otherwise stay forever. A live writer's file is kept.

    Parameters
    ----------
    folder : str or path
        The folder to clean (nothing happens when it cannot be listed).
    prefix : str
        The start of the temporary names, before the pid.
    suffix : str
        The end of the temporary names, after the pid.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            pid = name[len(prefix) : len(name) - len(suffix)]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                _remove_quietly(Path(folder) / name)


def clear_stale_lock(path: Path) -> None:
    """Remove ``<path>.lock`` left by a writer that died after renaming ``path`` into place (the
    output is complete, so no later write would take the lock over); a live holder's is kept.

    Parameters
    ----------
    path : path
        The output whose lock file to clear.
    """
    if Path(str(path) + ".lock").exists():
        with contextlib.suppress(OutputError):
            with output_lock(path):
                pass

"""Writing into run directories safely: one writer at a time, directories and file sets that appear whole or not at
all, and one-line errors for a full disk, a read-only file system or a path that is not a directory.

- `acquire(directory)`: an exclusive `fcntl.flock` on `<directory>/.lock`, held for a whole command. A second writer
  is refused with the holder's pid (issue 12: a resume beside a live run renamed a new metrics.jsonl over the live
  one, and two resumes deleted each other's temporary files). The OS drops the lock when its holder dies, so a
  killed run never leaves a stale lock; the file itself is removed on release.
- `create_directory(parent, name, fill)`: `fill` writes the first files into a locked staging directory, which a
  rename then moves to `name` (or `name_1`, `name_2`, ... if taken): a run directory exists complete or not at all.
- `publish_files(directory, "eval", files)`: a set of files (eval.json, eval.csv, eval.png) replaced by one rename
  of the symlink `eval` -> `.eval.<id>/`; each `<directory>/<file>` is a symlink `eval/<file>`. Readers see the old
  set or the new one, never a mix, and a failed write leaves the old set untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"
STAGING_SUFFIX = ".metarl-partial"
"""Suffix of a directory being created (`create_directory`); one left by a killed process is removed later."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DIR_MODE = 0o777 & ~_umask()
"""What mkdir would give (mkdtemp makes 0700 directories)."""


def _make_temp_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    os.chmod(path, _DIR_MODE)
    return path


class StorageError(Exception):
    """The file system refused a write (full disk, read-only, not a directory, permissions): one line, exit 2."""


class LockedError(StorageError):
    """Another live process holds the run directory's lock."""


_WHY = {
    errno.ENOSPC: "no space left on the device: free some space",
    errno.EDQUOT: "the disk quota is exceeded: free some space",
    errno.EROFS: "the file system is read-only: use a writable directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "an input/output error (a failing disk or network file system)",
    errno.ENOENT: "it does not exist (was the directory removed?)",
    errno.ENOLCK: "the file system does not support locks (use a local disk for runs)",
}
"""OSErrors that are the environment's, not a bug: reported in one line."""


def describe(err: OSError, action: str) -> str:
    """One line: what could not be done, where, and why."""
    where = f" ({err.filename})" if err.filename and str(err.filename) not in action else ""
    return f"cannot {action}{where}: {_WHY.get(err.errno or 0, err.strerror or str(err))}"


@contextlib.contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn the environment's OSErrors (`_WHY`) raised inside into a one-line `StorageError`."""
    try:
        yield
    except OSError as err:
        if err.errno not in _WHY:
            raise
        raise StorageError(describe(err, action)) from err


def fsync_directory(directory: Path) -> None:
    """Make a rename or creation in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename itself is still atomic
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- the lock
@dataclass
class Lock:
    """An exclusive lock on `directory`, re-entrant within this process (`count` nested holders)."""

    directory: Path
    fd: int
    key: tuple[int, int]
    count: int = 1

    def release(self) -> None:
        self.count -= 1
        if self.count > 0:
            return
        _HELD.pop(self.key, None)
        with contextlib.suppress(OSError):  # unlink before unlocking: a waiter then sees a new file (see acquire)
            (self.directory / LOCK_NAME).unlink()
        os.close(self.fd)


_HELD: dict[tuple[int, int], Lock] = {}
"""Locks this process holds, by the directory's (device, inode): the same directory under another path, or after
a rename, is the same lock."""


def acquire(directory: Path, command: str) -> Lock:
    """Lock `directory` for this process, or raise `LockedError` naming the process that holds it."""
    directory = Path(directory)
    with storage_errors(f"lock {directory}"):
        info = os.stat(directory)
    key = (info.st_dev, info.st_ino)
    if key in _HELD:
        _HELD[key].count += 1
        return _HELD[key]
    path = directory / LOCK_NAME
    while True:
        with storage_errors(f"lock {directory}"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LockedError(f"{directory} is in use by {holder}; wait for it to finish or stop it (its lock "
                                  f"goes when it exits)") from None
            except BaseException:
                os.close(fd)
                raise
        # The previous holder unlinks the file before unlocking: if ours is no longer the file at `path`, retry
        # on the new one, or two processes would each hold a lock on a different file.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # who holds it is for messages only (a full disk may refuse the bytes)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    _HELD[key] = Lock(directory, fd, key)
    return _HELD[key]


def _holder(fd: int) -> str:
    """"process 1234 (metarl train, since 2024-05-01 12:00:00)" from the lock file, or "another process"."""
    try:
        pid, _, rest = os.pread(fd, 512, 0).decode().strip().partition(" ")
        command, _, since = rest.rpartition(" ")
        command, _, date = command.rpartition(" ")
        return f"process {int(pid)} ({command}, since {date} {since})"
    except (OSError, ValueError):  # empty (the holder has not written it yet) or foreign content
        return "another process"


@contextlib.contextmanager
def locked(directory: Path, command: str) -> Iterator[Lock]:
    lock = acquire(directory, command)
    try:
        yield lock
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------- whole directories
def create_directory(parent: Path, name: str, fill: Callable[[Path], None], command: str) -> tuple[Path, Lock]:
    """Create `parent/name` (or `name_1`, `name_2`, ... when taken) holding what `fill(staging)` wrote; returns it
    and its lock, held.

    The staging directory is locked before `fill` and renamed into place; the lock (a file inside it) moves with it.
    The rename is the existence test: a directory is only renamed onto a name that does not exist yet, and the
    staging directory is never empty, so of several processes racing for one name exactly one gets it and the
    others take the next suffix (a rename onto a non-empty directory fails with ENOTEMPTY/EEXIST).
    """
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise StorageError(f"cannot create a run directory in {parent}: it is a file, not a directory")
    with storage_errors(f"create a run directory in {parent}"):
        parent.mkdir(parents=True, exist_ok=True)
        staging = _make_temp_dir(parent, f".{name}.", STAGING_SUFFIX)
    try:
        lock = acquire(staging, command)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        with storage_errors(f"write a new run directory in {parent}"):
            fill(staging)
            fsync_directory(staging)
            final = _claim(parent, name, staging)
            fsync_directory(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()
        raise
    lock.directory = final
    return final, lock


def _claim(parent: Path, name: str, staging: Path) -> Path:
    for n in range(10_000):
        final = parent / (name if n == 0 else f"{name}_{n}")
        if os.path.lexists(final):  # never rename onto an existing (possibly empty) directory
            continue
        try:
            os.rename(staging, final)
            return final
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
    raise StorageError(f"cannot create a run directory in {parent}: {name} and 10000 suffixes are taken")


def remove_abandoned_staging(parent: Path, min_age: float = 60.0) -> list[Path]:
    """Staging directories of creations killed before their rename: removed; returns them. One is abandoned when its
    lock is free and it is older than `min_age` seconds (a creation that has made its directory but not yet locked
    it is young)."""
    removed = []
    for path in sorted(Path(parent).glob(f".*{STAGING_SUFFIX}")):
        try:
            if not path.is_dir() or path.is_symlink() or time.time() - path.stat().st_mtime < min_age:
                continue
        except OSError:
            continue
        try:
            with locked(path, "cleanup"):
                shutil.rmtree(path)
            removed.append(path)
        except (StorageError, OSError):
            continue  # a live creation (locked) or not ours to remove
    return removed


# ----------------------------------------------------------------------------------------------- file sets
def publish_files(directory: Path, name: str, files: dict[str, bytes]) -> dict[str, Path]:
    """Replace the set of files `name` in `directory` at once: write them into `.<name>.<id>/`, then point the
    symlink `<name>` there with one rename; `<directory>/<file>` are symlinks `<name>/<file>`. Returns the paths.

    The caller holds the directory's lock. A failure before the rename (a full disk) removes the new files and
    leaves the previous set as it was.
    """
    directory = Path(directory)
    with storage_errors(f"write {', '.join(files)} in {directory}"):
        _adopt_plain_files(directory, name, files)
        staging = _make_temp_dir(directory, f".{name}.")
        try:
            for file, data in files.items():
                _write_synced(staging / file, data)
            fsync_directory(staging)
            for file in files:  # links dangle until the commit when this is the first set
                _symlink(f"{name}/{file}", directory / file)
            _symlink(staging.name, directory / name)  # the commit
            fsync_directory(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        remove_stale_sets(directory, name)
    return {file: directory / file for file in files}


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _symlink(target: str, path: Path) -> None:
    """Make `path` a symlink to `target`, atomically replacing what was there (unless it already is)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _adopt_plain_files(directory: Path, name: str, files: dict[str, bytes]) -> None:
    """Turn a set of plain files (an older metarl, or a copied run directory) into the symlinked layout without
    changing what a reader sees: hard-link them into a set directory, point `<name>` at it, then replace each plain
    file by its symlink (same content)."""
    link = directory / name
    if link.is_symlink():
        return
    plain = [file for file in files if (directory / file).is_file() and not (directory / file).is_symlink()]
    if link.exists():  # a real directory where the symlink belongs (e.g. copied with symlinks followed)
        os.replace(link, _make_temp_dir(directory, f".{name}.") / "old")
    if not plain:
        return
    adopted = _make_temp_dir(directory, f".{name}.")
    for file in plain:
        os.link(directory / file, adopted / file)
    _symlink(adopted.name, link)
    for file in plain:
        _symlink(f"{name}/{file}", directory / file)


def set_name_of(path: Path) -> str | None:
    """"eval-T4-E2-k1" for a set directory `.eval-T4-E2-k1.<id>` (`publish_files`: the id has no dot), else None."""
    name = path.name
    if not name.startswith(".") or "." not in name[1:]:
        return None
    return name[1:].rsplit(".", 1)[0]


def remove_stale_sets(directory: Path, name: str) -> list[Path]:
    """`.<name>.<id>` directories the symlink `<name>` does not point to (a killed or superseded write). Names may
    hold dots (`eval-a0.1`): only directories whose name is exactly `name` count, not those of `eval-a0.1.5`."""
    link = directory / name
    current = os.readlink(link) if link.is_symlink() else None
    stale = [p for p in sorted(directory.glob(f".{name}.*")) if set_name_of(p) == name and p.is_dir()
             and not p.is_symlink() and p.name != current]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale

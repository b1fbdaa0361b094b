"""One run's directory: checked before the first byte, locked while in use, replaced atomically.

"Nothing lost, ever" for the workdir as a whole (``recipes.io`` does it for each file):

* :func:`check_path` refuses a workdir that is a file, unwritable, or on a pseudo
  filesystem (``/proc``, ``/sys``, ...) before anything is written; :func:`check_space`
  refuses one without room for a checkpoint.
* :func:`locked` holds an advisory ``flock`` on ``WORKDIR/.lock`` for the whole run: a
  second process on the same workdir is refused with the holder's PID and start time. The
  kernel drops the lock when its process dies, so a killed run's lock file is simply taken
  over. The lock is re-entrant within one process (``babysit`` locks the workdir, then
  ``train.run`` locks it again).
* :func:`replacing` stages a replacement (``--overwrite``) in ``.NAME.overwrite`` beside
  the workdir and swaps the two directories only once the new run has finished, with
  ``renameat2(RENAME_EXCHANGE)`` (one atomic step on Linux). Until then the old run stays
  whole; a failed or killed replacement leaves it exactly as it was, plus a staged run that
  the same command continues.

Written by hand: neither Keras nor TensorFlow lock or stage a directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from recipes import io

LOCK_NAME = ".lock"  # not a result: excluded when two runs' files are compared
STAGED_MARK = ".staged"  # in a replacement being built; gone once it has been swapped in
_PSEUDO_FILESYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs",
                       "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl",
                       "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs", "rpc_pipefs"}
_HELD: dict[str, list[int]] = {}  # real path -> [fd, depth]: this process's locks


class WorkdirBusy(ValueError):
    """Another process holds the workdir's lock."""


# -- checks before anything is written ---------------------------------------------------

def check_path(workdir: str) -> None:
    """Refuses a workdir that cannot hold a run, before anything is written.

    Raises:
        ValueError: empty, a file, unwritable, or on a pseudo filesystem, with the fix.
    """
    if not workdir:
        raise ValueError("--workdir is required: give a directory for the run's artifacts")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is a file; give a directory")
    parent = existing_parent(workdir)
    if not os.path.isdir(parent):
        raise ValueError(f"--workdir {workdir}: {parent} is not a directory; choose another "
                         "path")
    fs = filesystem_type(parent)
    if fs in _PSEUDO_FILESYSTEMS:
        raise ValueError(f"--workdir {workdir} is on a {fs} pseudo filesystem, which cannot "
                         "hold files; choose a directory on a disk")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir}: {parent} is not writable; choose another "
                         "directory")


def check_space(workdir: str, need: int, what: str = "a checkpoint") -> None:
    """Refuses a workdir whose filesystem has less than ``need`` bytes free.

    Raises:
        ValueError: naming the free space, the need and the fix.
    """
    free = io.free_bytes(existing_parent(workdir))
    if free is not None and free < need:
        raise ValueError(f"--workdir {workdir}: only {io.human_bytes(free)} free, and "
                         f"{what} needs about {io.human_bytes(need)}; free some space or "
                         "choose another directory")


def existing_parent(path: str) -> str:
    """The path itself if it exists, else its nearest existing ancestor."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem holding ``path`` (``ext4``, ``proc``...), None if unknown."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:  # not Linux: fall back on the usual mount points
        for prefix, name in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "devtmpfs")):
            if real == prefix or real.startswith(prefix + "/"):
                return name
    return kind


# -- the lock ----------------------------------------------------------------------------

@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds ``workdir``'s lock (creating the directory) for the block.

    Raises:
        WorkdirBusy: another process holds it ("DIR is in use by process PID (started …)").
    """
    os.makedirs(workdir, exist_ok=True)
    key = os.path.realpath(workdir)
    if key in _HELD:  # re-entered by this process (babysit -> train.run)
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(workdir)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(workdir: str) -> int:
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise WorkdirBusy(f"{workdir} is in use by {_holder(path)}; wait for it to finish, "
                          "or use another workdir") from None
    started = time.strftime("%Y-%m-%d_%H:%M:%S_%Z", time.localtime())
    text = f"pid={os.getpid()} started={started} command={' '.join(sys.argv)[:500]}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8", "replace"), 0)
    return fd


def _holder(path: str) -> str:
    """'process PID (started …)' from a held lock file's text."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            fields = dict(p.split("=", 1) for p in f.readline().split(" command=")[0].split()
                          if "=" in p)
    except OSError:
        fields = {}
    pid = fields.get("pid", "?")
    started = fields.get("started", "").replace("_", " ")
    return f"process {pid}" + (f" (started {started})" if started else "")


# -- replacing a run atomically ------------------------------------------------------------

def staging_path(workdir: str) -> str:
    """Where ``--overwrite`` builds the replacement: ``PARENT/.NAME.overwrite``."""
    parent, name = os.path.split(os.path.abspath(workdir))
    return os.path.join(parent, f".{name}.overwrite")


def holds_run(directory: str, record: str, done: str, matches: Callable[[Any], bool], *,
              finished_too: bool = False) -> bool:
    """Whether ``directory`` holds a given run: its ``record`` JSON passes ``matches``.

    Args:
        directory: where to look.
        record: the JSON file that describes the run (``config.json``, ``search.json``).
        done: the file a finished run has (``summary.json``, ``result.json``).
        matches: takes the record's contents; True for the run asked about.
        finished_too: a finished run counts too (by default only an unfinished one does).

    Returns:
        False also when the record is unreadable (it describes no run we can continue).
    """
    path = os.path.join(directory, record)
    if not os.path.exists(path):
        return False
    if os.path.exists(os.path.join(directory, done)) and not finished_too:
        return False
    try:
        return bool(matches(io.read_json(path, what=record)))
    except ValueError:
        return False


def holds_files(workdir: str) -> bool:
    """Whether ``workdir`` holds anything besides its lock file."""
    return os.path.isdir(workdir) and any(n != LOCK_NAME for n in os.listdir(workdir))


@contextlib.contextmanager
def replacing(workdir: str, *, can_continue: Callable[[str], bool]) -> Iterator[str]:
    """Yields the directory where a replacement of ``workdir`` is built; swaps it in after.

    Call with ``workdir`` locked. A replacement left by a killed attempt is continued when
    ``can_continue(staged_dir)`` says it is the same run, else started afresh. If the block
    raises (or the process is killed), ``workdir`` is untouched.

    Args:
        workdir: the run being replaced.
        can_continue: whether a staged directory holds an unfinished run of this config.
    """
    stage = staging_path(workdir)
    recover(workdir)
    with locked(stage):
        if not os.path.exists(os.path.join(stage, STAGED_MARK)) or not can_continue(stage):
            _empty(stage)
        io.write_text(os.path.join(stage, STAGED_MARK), f"replaces {workdir}\n")
        yield stage
        _swap(workdir, stage)
    recover(workdir)


def recover(workdir: str) -> None:
    """Finishes what a replacement killed during its swap left behind (idempotent).

    Call with ``workdir`` locked. A staged directory without the mark is the old run
    swapped out of ``workdir``; the mark inside ``workdir`` means the swap completed.
    """
    stage = staging_path(workdir)
    marked = os.path.exists(os.path.join(stage, STAGED_MARK))
    trash = _trash_dirs(workdir)
    if marked and trash and not holds_files(workdir):  # two-rename fallback killed midway
        for entry in os.listdir(stage):
            if entry != LOCK_NAME:
                os.replace(os.path.join(stage, entry), os.path.join(workdir, entry))
        marked = False
    if os.path.isdir(stage) and not marked:
        _discard(stage, workdir)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(workdir, STAGED_MARK))
    for path in _trash_dirs(workdir):
        shutil.rmtree(path, ignore_errors=True)


def _swap(workdir: str, stage: str) -> None:
    """Exchanges the two directories atomically, then puts the old run out of the way."""
    if not _exchange(workdir, stage):  # no renameat2 here: two renames; recover() mends
        os.rename(workdir, _trash_name(workdir))
        os.rename(stage, workdir)
        return
    _discard(stage, workdir)  # the old run, now at the staging path


def _discard(path: str, workdir: str) -> None:
    """Renames ``path`` out of the way (atomic: no half-deleted tree keeps a name), deletes it."""
    trash = _trash_name(workdir)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _trash_name(workdir: str) -> str:
    parent, name = os.path.split(os.path.abspath(workdir))
    return os.path.join(parent, f".{name}.replaced-{os.getpid()}-{time.monotonic_ns()}")


def _trash_dirs(workdir: str) -> list[str]:
    parent, name = os.path.split(os.path.abspath(workdir))
    if not os.path.isdir(parent):
        return []
    return [os.path.join(parent, e) for e in os.listdir(parent)
            if e.startswith(f".{name}.replaced-")]


def _empty(directory: str) -> None:
    for entry in os.listdir(directory):
        if entry == LOCK_NAME:
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """``renameat2(a, b, RENAME_EXCHANGE)``; False where the OS or filesystem lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)

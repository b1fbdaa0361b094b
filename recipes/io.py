"""Atomic artifact writing: a killed run never leaves a half-written file.

Every artifact goes to a temporary file in the same directory and is moved into place with
``os.replace``, which is atomic on POSIX filesystems: a reader sees the old file or the new
one, never a mix. Written by hand because neither Keras nor TF offers it for plain files.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; moves it onto ``path`` if the block succeeds.

    Args:
        path: the final file.
        suffix: ending the temporary name must have (Keras insists on ``.keras``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    # ".NAME.XXXXXXXX.tmp[SUFFIX]": recognizable by remove_stale_temps after a SIGKILL.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp" + suffix if suffix != ".tmp" else suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[\w.]+)?$")


def remove_stale_temps(directory: str) -> list[str]:
    """Deletes the temporary files that a killed writer left under ``directory``.

    ``atomic_path`` removes its temporary file when the block fails, but a SIGKILL (or a
    power cut) runs no cleanup. Call this when a run starts again in its workdir (one run
    per workdir: no other writer can be using the files).

    Returns:
        The removed paths.
    """
    removed = []
    for base, _, files in os.walk(directory):
        for name in files:
            if _TEMP_NAME.match(name):
                path = os.path.join(base, name)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically, flushed to disk before the rename.

    Raises:
        OSError: with ``filename`` set to ``path`` (disk full, I/O error); the old file, if
            any, is left as it was.
    """
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise _naming(e, path) from e


def write_with(path: str, writer: Callable[[str], Any], *, suffix: str = "",
               need: int = 0) -> None:
    """Writes ``path`` atomically with ``writer(tmp_path)`` (e.g. ``model.save``).

    Args:
        path: the final file.
        writer: writes the file it is given (a temporary name ending in ``suffix``).
        suffix: the ending ``writer`` requires (``.keras``, ``.weights.h5``).
        need: bytes the file needs: a write that cannot fit is not started
            (:func:`ensure_space`), since h5py can crash rather than raise on a full disk.

    Raises:
        OSError: no room, or the write failed, naming ``path``; an old file stays as it was.
    """
    ensure_space(path, need)
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            writer(tmp)
    except OSError as e:
        raise _naming(e, path) from e


def _naming(e: OSError, path: str) -> OSError:
    """``e`` with ``path`` as its file (a write error inside a temporary file names that).

    h5py reports a full disk as a long text with no errno; it becomes plain ENOSPC.
    """
    code, text = e.errno, e.strerror or str(e)
    if _FULL.search(text):
        code, text = errno.ENOSPC, os.strerror(errno.ENOSPC)
    return OSError(code, text, path)


def free_bytes(path: str) -> int | None:
    """Bytes free for this user on the filesystem holding ``path`` (None if unknown)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # not reached


def ensure_space(path: str, need: int) -> None:
    """Raises ``OSError(ENOSPC)`` naming ``path`` when its filesystem has < ``need`` bytes.

    Called before a checkpoint write: h5py can crash the process (not raise) when the disk
    fills in the middle of an HDF5 file, so a write that cannot fit is not started.
    """
    free = free_bytes(os.path.dirname(os.path.abspath(path)))
    if free is not None and free < need:
        raise OSError(errno.ENOSPC, f"No space left on device (about {human_bytes(need)} "
                      "needed)", path)


_FULL = re.compile(r"No space left on device|errno = 28\b|Disk quota exceeded")
_PATH_IN_TEXT = re.compile(r"(/[^\s'\",;:()]+)")


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (an OSError, or TensorFlow's or h5py's own error) says the disk is full."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return bool(_FULL.search(str(e)))


def as_os_error(e: BaseException) -> OSError:
    """A disk-full error of any library as ``OSError(ENOSPC)``, naming the file it mentions."""
    if isinstance(e, OSError) and e.errno is not None:
        return e
    match = _PATH_IN_TEXT.search(str(e))
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), match.group(1) if match else None)


def describe_os_error(e: OSError) -> str:
    """One line for a failed write or read: the file, the error and, when full, the space."""
    where = e.filename or "a file"
    text = f"{where}: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or "space" in str(e).lower():
        free = free_bytes(os.path.dirname(os.path.abspath(e.filename))) if e.filename else None
        if free is not None:
            text += f" ({human_bytes(free)} free there)"
        text += "; free some space and run the same command again to resume"
    return text


def write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_csv(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Writes ``rows`` as CSV with a header of ``columns`` (missing cells empty), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_json(path: str, *, what: str) -> Any:
    """Reads a JSON artifact, turning a truncated or corrupt file into a clear ValueError."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is corrupt or half-written ({e}); move it away "
                         "or use a new workdir") from e


def read_csv(path: str) -> list[dict[str, str]]:
    """Reads a CSV artifact into a list of row dicts (strings)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON data: mappings with str keys, lists, Python numbers, None.

    Tuples become lists, numpy arrays and scalars Python lists and numbers, and a NaN or an
    infinity None (JSON has neither). The one sanitizer every artifact goes through.
    """
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_ready(value.tolist())  # numpy arrays and scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(obj: Any) -> Any:
    """Converts numpy scalars/arrays and tuples for json.dumps."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


#: The libraries whose Python log records a run sends to its log file instead of the console.
RUN_LOGGERS = ("recipes", "tuning", "models", "tensorflow", "keras", "keras_tuner", "py.warnings")


@contextlib.contextmanager
def logs_to(path: str, names: Sequence[str] = RUN_LOGGERS) -> Iterator[None]:
    """Sends the named loggers' records (and Python warnings) to ``path`` for a block.

    The console keeps a run's own lines; the libraries' warnings (a monitor's early alarm,
    a retracing note, a Keras ``UserWarning``), which the step lines and the report say again
    in words, go to the run's log file (appended, one plain line each) instead of the
    console in absl's format. ``BABYSIT_TF_LOGS=1`` leaves the console as it was.
    """
    if os.environ.get("BABYSIT_TF_LOGS"):
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.propagate, lg.handlers[:]) for lg in loggers]
    logging.captureWarnings(True)
    try:
        for lg in loggers:
            lg.handlers, lg.propagate = [handler], False
        yield
    finally:
        for lg, (propagate, handlers) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        logging.captureWarnings(False)
        handler.close()

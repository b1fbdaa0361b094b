"""Atomic artifact writing: a killed run never leaves a half-written file.

Every artifact goes to a temporary file in the same directory and is moved into place with
``os.replace``, which is atomic on POSIX filesystems: a reader sees the old file or the new
one, never a mix. Written by hand because neither Keras nor TF offers it for plain files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
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
    """Writes ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


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


def _json_default(obj: Any) -> Any:
    """Converts numpy scalars/arrays and tuples for json.dumps."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")

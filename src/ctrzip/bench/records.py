"""The result file of ``ctrzip bench``: one JSON object per line, appended whole.

A line is written with one ``os.write`` on an ``O_APPEND`` descriptor and flushed to disk,
so a killed run leaves either the whole line or, at worst, a torn last line without its
newline; :func:`read_records` drops such a tail (it is the cell that was being written) and
:func:`repair` cuts it off before the next append, so the rerun redoes that cell once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ctrzip.data.readers.errors import DataFormatError


def _complete_lines(path: Path) -> tuple[list[str], int]:
    """Lines ending in a newline and the byte length they take (the rest is a torn tail)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end].decode().splitlines(), end


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file (blank lines skipped; a torn last line dropped).

    Raises:
        DataFormatError: a complete line that is not a JSON object, naming file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines, _ = _complete_lines(path)
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}:{i}: not a JSON line ({err.msg}); remove or fix it") from None
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}:{i}: a JSON object per line is expected")
        out.append(rec)
    return out


def repair(path: str | Path) -> bool:
    """Cut a torn last line (no newline: a write killed midway) off ``path``; True if cut."""
    path = Path(path)
    if not path.exists():
        return False
    _, end = _complete_lines(path)
    if end == path.stat().st_size:
        return False
    with path.open("r+b") as f:
        f.truncate(end)
    return True


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, in one write, flushed to disk."""
    line = (json.dumps(record, sort_keys=False, default=_jsonable) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        while written < len(line):  # a short write (rare): finish the same line
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)

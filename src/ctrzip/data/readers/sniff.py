"""Say what the start of an input file looks like, for the error raised when its first rows
are all bad: a compressed or binary file, another encoding, another separator, a header.

Why: "expected 40 columns, got 1" on every row is true but does not tell the user that the
file is comma-separated, or that its first line is a header.
"""

from __future__ import annotations

from pathlib import Path

from ctrzip.data.readers.errors import DataFormatError
from ctrzip.data.readers.text import compression_of, other_magic, read_head

SEPARATORS = (",", "\t", ";", "|", " ")
_SAMPLE_LINES = 20


def _show(sep: str) -> str:
    return {"\t": "tab", " ": "space"}.get(sep, repr(sep))


def describe_header(names: list[str], separator: str) -> str | None:
    """A hint when a header read with ``separator`` looks split on the wrong character."""
    if len(names) != 1:
        return None
    for sep in SEPARATORS:
        if sep != separator and sep in names[0].strip():
            return f"the header is one column containing {_show(sep)}: is the separator {_show(sep)}?"
    return None


def describe_start(
    path: Path,
    separator: str | None = None,
    names: list[str] | None = None,
    has_header: bool = False,
    encoding: str = "utf-8",
) -> str:
    """What the first lines of ``path`` look like ('' when nothing stands out).

    Args:
        path: the input file.
        separator: the separator the format expects (None: not a delimited format).
        names: the expected columns (delimited formats).
        has_header: whether line 1 is a header (then it is not a data line).
        encoding: the configured text encoding (only ``utf-8`` is checked).
    """
    with open(path, "rb") as f:
        magic = f.read(8)
    what = other_magic(magic)
    if what is not None:
        return f"the file is {what}"
    hints = []
    kind = compression_of(path)
    if kind is not None:
        hints.append(f"the file is {kind}-compressed (read decompressed)")
    try:
        head = read_head(path)
    except DataFormatError as err:  # a corrupt compressed file
        return "; ".join([*hints, str(err).removeprefix(f"{path}: ")])
    what = other_magic(head)  # e.g. a gzip of a zip, or UTF-16 after decompression
    if what is not None:
        return "; ".join([*hints, f"it is {what}"])
    if b"\x00" in head:
        return "; ".join([*hints, "it contains NUL bytes: binary data, not text"])
    if b"\r" in head and b"\n" not in head:
        hints.append("its lines end with a carriage return only (old Mac line ends): convert them to \\n")
    lines = head.split(b"\n")[:-1][: _SAMPLE_LINES + 1] or [head]
    sample = b"\n".join(lines)
    if encoding == "utf-8":  # latin-1: any byte is text
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as err:
            hints.append(
                f"it is not UTF-8 text (byte 0x{sample[err.start]:02x}): set encoding: latin-1 "
                "if it is Latin-1"
            )
    text = [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]
    data = text[1:] if has_header else text
    data = [ln for ln in data if ln.strip()]
    if separator is not None and names and data:
        need = len(names)
        got = {ln.count(separator) + 1 for ln in data}
        other = [s for s in SEPARATORS if s != separator and all(ln.count(s) + 1 == need for ln in data)]
        sep = separator
        if got != {need} and other:
            sep = other[0]
            hints.append(
                f"its lines have {need} columns when split on {_show(sep)}, not on "
                f"{_show(separator)} (the format's separator)"
            )
        elif len(got) == 1 and got != {need}:
            hints.append(f"its lines have {got.pop()} columns, the schema expects {need}")
        first = text[0].split(sep)
        if not has_header and len(first) == need and not _is_number(first[0]):
            shown = sep.join(first[:3])
            hints.append(f"line 1 looks like a header ({shown!r}...): this format has no header line")
    return "; ".join(hints)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

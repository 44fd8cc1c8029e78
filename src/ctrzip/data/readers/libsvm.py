"""libsvm / libfm / libffm text: ``label feat:val ...`` or ``label field:feat:val ...``.

The two layouts are told apart by the first data line. ``feat:val`` rows are positional
(pair ``i`` is field ``i``, the Frappe/MovieLens layout of the FM papers); ``field:feat:val``
rows are keyed by field. A categorical field takes ``feat``, a numeric field ``val``. Labels
-1/+1 (the libsvm habit) become 0/1; anything else is left for the encoder to reject.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from ctrzip.data.readers.base import BadRows, DataFormatError, RawTable, Reader
from ctrzip.data.readers.sniff import describe_start
from ctrzip.data.readers.text import count_lines, invalid_utf8, iter_blocks, line_spans, open_text


class LibsvmReader(Reader):
    """libsvm-style sparse text.

    Args:
        path: the file.
        label: name given to the label column.
        kinds: source key -> ``feature`` (take ``feat``) or ``value`` (take ``val``).
        block_bytes: approximate bytes per block.
    """

    def __init__(
        self,
        path: str | Path,
        label: str,
        kinds: dict[str, Literal["feature", "value"]],
        block_bytes: int = 32 << 20,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__(path, block_bytes)
        self.label, self.kinds, self.encoding = label, dict(kinds), encoding
        first = self._first_pair()
        self.keyed = first.count(":") == 2
        if not self.keyed:
            bad_keys = [k for k in kinds if not k.isdigit()]
            if bad_keys:
                raise DataFormatError(
                    f"{self.path}: feat:val rows are positional; sources must be 0-based positions, "
                    f"got {bad_keys}"
                )

    def _first_pair(self) -> str:
        with open_text(self.path) as (f, _):
            for raw in f:
                parts = raw.decode("latin-1").split()  # a sniff: the layout is ASCII
                if len(parts) > 1:
                    return parts[1]
        raise DataFormatError(f"{self.path}: no line with a label and at least one feat:val pair")

    @property
    def columns(self) -> list[str]:
        return [self.label, *self.kinds]

    def count_rows(self) -> int:
        return count_lines(self.path)

    def describe(self) -> str:
        return describe_start(self.path, encoding=self.encoding)

    def iter_tables(
        self, columns: list[str], bad: BadRows, key_columns: list[str] | None = None
    ) -> Iterator[RawTable]:
        self.require(columns)
        row0 = 0
        for blk in iter_blocks(self.path, self.block_bytes, encoding=self.encoding):
            starts, ends = line_spans(blk.data)
            broken = invalid_utf8(blk.data, starts, ends)  # such lines are bad rows, not replaced
            text = blk.data.decode("utf-8", errors="replace").split("\n")[:-1]
            toks = pl.Series("t", text).str.strip_chars().str.split(" ")
            toks = toks.list.eval(pl.element().filter(pl.element() != ""))
            base = pl.DataFrame({"t": toks}).with_row_index("r")
            label = toks.list.first().replace({"-1": "0", "+1": "1"})
            frame, reasons = self._keyed(base) if self.keyed else self._positional(base)
            frame = frame.with_columns(label.alias(self.label)).select(columns)
            lines = np.arange(blk.first_line, blk.first_line + blk.n_lines, dtype=np.int64)
            rows = np.arange(row0, row0 + blk.n_lines, dtype=np.int64)
            row0 += blk.n_lines
            table = RawTable(frame, lines, rows, blk.nbytes)
            if broken:
                why: list[str | None] = [None] * blk.n_lines
                for i, pos in broken.items():
                    why[i] = (
                        f"invalid UTF-8 byte 0x{blk.data[starts[i] + pos]:02x} (byte {pos + 1} of the "
                        "line); set encoding: latin-1 if the file is Latin-1 text"
                    )
                reasons = pl.Series(why, dtype=pl.String).fill_null(reasons)
            is_bad = reasons.is_not_null().to_numpy()
            if is_bad.any():
                idx = np.flatnonzero(is_bad)
                bad.add(self.path, lines[idx], reasons.gather(idx[: bad.max_examples]).to_list())
                table = table.drop(is_bad)
            yield table

    def _pick(self, parts: pl.Expr, key: str) -> pl.Expr:
        """``feat`` or ``val`` of split ``parts`` (field-keyed pairs have the field first)."""
        off = 1 if self.keyed else 0
        return parts.list.get(off + (1 if self.kinds[key] == "value" else 0), null_on_oob=True)

    def _positional(self, base: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
        width = max(int(k) for k in self.kinds) + 1
        pairs = pl.col("t").list.slice(1)
        cols = [
            self._pick(pairs.list.get(int(k), null_on_oob=True).str.split(":"), k).alias(k)
            for k in self.kinds
        ]
        malformed = pairs.list.eval(pl.element().str.count_matches(":") != 1).list.any()
        reason = (
            pl.when(pl.col("t").list.len() == 0)
            .then(pl.lit("empty line"))
            .when(malformed)
            .then(pl.lit("a pair is not feat:val"))
            .when(pairs.list.len() > width)
            .then(pl.format("{} pairs but the schema declares {} fields", pairs.list.len(), pl.lit(width)))
        )
        out = base.select(*cols, reason.alias("_why"))
        return out.drop("_why"), out.get_column("_why")

    def _keyed(self, base: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
        ex = (
            base.select("r", pl.col("t").list.slice(1).alias("p"))
            .explode("p")
            .filter(pl.col("p").is_not_null())
            .with_columns(pl.col("p").str.split(":").alias("parts"))
            .with_columns(pl.col("parts").list.first().alias("field"))
        )
        known = list(self.kinds)
        ex = ex.with_columns(
            pl.when(pl.col("parts").list.len() != 3)
            .then(pl.format("pair '{}' is not field:feat:val", pl.col("p")))
            .when(~pl.col("field").is_in(known))
            .then(pl.format("field {} is not in the schema", pl.col("field")))
            .when(pl.struct("r", "field").is_duplicated())
            .then(pl.format("field {} appears twice", pl.col("field")))
            .alias("_why")
        )
        why = ex.group_by("r").agg(pl.col("_why").drop_nulls().first())
        out = base.select("r", pl.when(pl.col("t").list.len() == 0).then(pl.lit("empty line")).alias("_e"))
        out = out.join(why, on="r", how="left", maintain_order="left")
        for key in known:
            sub = ex.filter(pl.col("field") == key).unique("r", keep="first", maintain_order=True)
            sub = sub.select("r", self._pick(pl.col("parts"), key).alias(key))
            out = out.join(sub, on="r", how="left", maintain_order="left")
        reasons = out.select(pl.coalesce("_e", "_why")).to_series()
        return out.select(known), reasons

"""Raw-file formatting: Criteo TSV and Avazu CSV text for one chunk, via pyarrow's CSV writer.

Why pyarrow: building 8-hex-digit tokens as a zero-copy Arrow string array and letting Arrow's
C++ writer emit the text is ~10x faster than numpy string ops (measured 0.16 s per 100k
Criteo rows, all 40 columns).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ctrzip.data.synth.hashing import fmix32, mix_key, splitmix64
from ctrzip.data.synth.layouts import AVAZU_COLUMNS
from ctrzip.data.synth.sampler import Plan, Sample

_HEX_PAIRS = np.array(
    [ord(a) | (ord(b) << 8) for a in "0123456789abcdef" for b in "0123456789abcdef"], dtype=np.uint16
)
_TAG_ROW_ID = 0x1D


def hex_tokens(ranks: np.ndarray, key: np.uint32) -> np.ndarray:
    """[n, 8] uint8 ASCII hex of the uint32 bijection of each rank (distinct ranks, distinct tokens)."""
    token = fmix32(ranks.astype(np.uint32) ^ np.uint32(key))
    big_endian = token.astype(">u4").view(np.uint8).reshape(-1, 4)
    return _HEX_PAIRS[big_endian].view(np.uint8).reshape(-1, 8)


def _hex_array(ranks: np.ndarray, key: np.uint32, null: np.ndarray | None) -> pa.Array:
    """Arrow string array of 8-char tokens straight from buffers; ``null`` rows are empty cells."""
    n = len(ranks)
    data = pa.py_buffer(np.ascontiguousarray(hex_tokens(ranks, key)))
    offsets = pa.py_buffer(np.arange(0, 8 * n + 1, 8, dtype=np.int32))
    valid = None if null is None else pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.StringArray.from_buffers(n, offsets, data, valid)


def _to_csv(columns: list[pa.Array], names: list[str], delimiter: str, header: bool) -> bytes:
    """Delimited text, no quoting (no cell holds a delimiter); the header, if any, unquoted too."""
    table = pa.Table.from_arrays(columns, names=names)
    sink = io.BytesIO()
    if header:
        sink.write((delimiter.join(names) + "\n").encode())
    options = pacsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
    pacsv.write_csv(table, sink, options)
    return sink.getvalue()


def criteo_text(plan: Plan, sample: Sample, labels: np.ndarray) -> bytes:
    """Criteo Kaggle TSV lines: label, I1..I13, C1..C26; missing cells are empty."""
    layout = plan.layout
    numeric = sample.numeric
    assert numeric is not None
    cols: list[pa.Array] = [pa.array(labels.astype(np.int64))]
    for j in range(len(layout.numeric)):
        miss = np.isnan(numeric[:, j])
        cols.append(pa.array(np.nan_to_num(numeric[:, j]).astype(np.int64), mask=miss))
    for j in range(len(layout.categorical)):
        ranks = sample.ranks[:, j]
        cols.append(_hex_array(ranks, plan.token_keys[j], ranks == 0))
    names = ["label", *(f.name for f in layout.numeric), *(f.name for f in layout.categorical)]
    return _to_csv(cols, names, "\t", header=False)


def avazu_text(plan: Plan, sample: Sample, labels: np.ndarray, header: bool) -> bytes:
    """Avazu CSV lines (``header`` adds the column line): id, click, hour YYMMDDHH, 21 fields."""
    slot = sample.hour_slot(plan.rows)
    hour = 14102100 + (slot // 24) * 100 + slot % 24  # 2014-10-21 00h .. 2014-10-30 23h
    row_id = splitmix64(sample.row_index.astype(np.uint64) ^ mix_key(plan.seed, _TAG_ROW_ID))
    by_name: dict[str, pa.Array] = {
        "id": pa.array(row_id),
        "click": pa.array(labels.astype(np.int64)),
        "hour": pa.array(hour.astype(np.int64)),
    }
    for j, f in enumerate(plan.layout.categorical):
        ranks = sample.ranks[:, j]
        if f.style == "hex":
            by_name[f.name] = _hex_array(ranks, plan.token_keys[j], None)
        else:  # rank 0 (placeholder) is -1, as Avazu's C20
            by_name[f.name] = pa.array(np.where(ranks == 0, -1, f.base + ranks - 1))
    return _to_csv([by_name[c] for c in AVAZU_COLUMNS], list(AVAZU_COLUMNS), ",", header=header)


def chunk_text(plan: Plan, sample: Sample, labels: np.ndarray, first: bool) -> bytes:
    """The raw text of one chunk in the layout's format."""
    if plan.layout.kind == "criteo-like":
        return criteo_text(plan, sample, labels)
    return avazu_text(plan, sample, labels, header=first)

"""JSON records -> the raw string columns the row encoder reads, with the request's checks.

A request is ``{"records": [{column: value, ...}, ...]}`` with the raw columns of the training
data (the label excluded). Every problem is a ``RequestError`` whose one-line message names
the record (0-based index) and the field, with the HTTP status it maps to: 400 for a body that
is not JSON, 413 for too many records, 422 for the rest.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import polars as pl

from ctrzip.data.readers import BadRows, RawTable
from ctrzip.errors import UserError
from ctrzip.serving.rows import EncodedRows, RowEncoder

# JSON types a column takes, by how its features read it (null = missing, always allowed)
_KIND_TYPES = {
    "categorical": {"string", "integer"},
    "timestamp": {"string", "integer"},
    "numeric": {"integer", "number"},
    "sequence": {"string", "array"},
}
_BAD_ROW = re.compile(r"^record:(\d+): column (\S+): (.*)$")


class RequestError(UserError):
    """A request the service refuses; ``status`` is its HTTP status code (4xx)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class RecordSchema:
    """What a record must look like for one encoder: per raw column, the JSON types it takes.

    Args:
        encoder: the artifact's row encoder.
        max_batch: the most records one request may hold.
    """

    def __init__(self, encoder: RowEncoder, max_batch: int) -> None:
        self.encoder, self.max_batch = encoder, max_batch
        self.types: dict[str, set[str]] = {}
        self.separators: dict[str, str] = {}
        for f in encoder.config.features:
            kind = "timestamp" if f.derive else "numeric" if f.type == "numeric" else f.type
            have = self.types.get(f.column)
            self.types[f.column] = _KIND_TYPES[kind] if have is None else have & _KIND_TYPES[kind]
            if f.separator:
                self.separators[f.column] = f.separator

    def describe(self) -> dict[str, Any]:
        """The request schema (``/metadata``)."""
        fields = {}
        for col, types in self.types.items():
            entry: dict[str, Any] = {"types": sorted(types | {"null"})}
            if col in self.separators:
                entry["separator"] = self.separators[col]
            fields[col] = entry
        return {
            "body": '{"records": [{field: value, ...}, ...]}',
            "max_records": self.max_batch,
            "fields": fields,
            "missing": "a field left out or null is a missing value; an unseen value maps to the OOV id",
        }

    def parse(self, body: bytes) -> list[dict[str, Any]]:
        """The records of a request body.

        Raises:
            RequestError: not JSON (400), not ``{"records": [...]}`` (422), more than
                ``max_batch`` records (413), a record that is not an object (422).
        """
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, or an integer too long
            where = (
                f" at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
            )
            raise RequestError(f"body: malformed JSON{where} ({err})", 400) from None
        except RecursionError:  # nesting deeper than the parser's stack
            raise RequestError("body: malformed JSON (nested too deeply)", 400) from None
        if not isinstance(doc, dict) or "records" not in doc:
            raise RequestError('body: expected a JSON object {"records": [...]}')
        extra = sorted(set(doc) - {"records"})
        if extra:
            raise RequestError(f"body: unknown key {extra[0]!r} (only 'records')")
        records = doc["records"]
        if not isinstance(records, list):
            raise RequestError(f"records: expected an array of objects, got {_type_of(records)}")
        if len(records) > self.max_batch:
            raise RequestError(f"records: {len(records)} records, at most {self.max_batch} per request", 413)
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise RequestError(f"record {i}: expected an object of field: value, got {_type_of(rec)}")
        return records

    def frame(self, records: list[dict[str, Any]]) -> pl.DataFrame:
        """The records as string columns (None = missing), checked field by field.

        Raises:
            RequestError: an unknown field or a value of a wrong type, naming record and field.
        """
        cols: dict[str, list[str | None]] = {c: [None] * len(records) for c in self.types}
        for i, rec in enumerate(records):
            for key, value in rec.items():
                if key not in self.types:
                    raise RequestError(f"record {i}: unknown field {key!r} (fields: {', '.join(self.types)})")
                cols[key][i] = self._text(i, key, value)
        return pl.DataFrame({c: pl.Series(c, v, dtype=pl.String) for c, v in cols.items()})

    def _text(self, i: int, key: str, value: Any) -> str | None:
        kind = _type_of(value)
        if kind == "null":
            return None
        allowed = self.types[key]
        if kind not in allowed:
            raise RequestError(
                f"record {i}: field {key!r}: expected {' or '.join(sorted(allowed))} (or null), got {kind}"
            )
        if kind == "number" and not math.isfinite(value):
            raise RequestError(f"record {i}: field {key!r}: {value} is not a finite number")
        if kind != "array":
            return repr(value) if kind == "number" else str(value)
        sep = self.separators[key]
        for item in value:
            if _type_of(item) not in ("string", "integer") or sep in str(item):
                raise RequestError(
                    f"record {i}: field {key!r}: items must be strings or integers "
                    f"without {sep!r}, got {item!r}"
                )
        return sep.join(str(item) for item in value)

    def encode(self, records: list[dict[str, Any]]) -> EncodedRows:
        """Model inputs of checked records (``frame``), through the artifact's encoder.

        Raises:
            RequestError: as ``frame``, or a value the encoder rejects (a number beyond float32,
                a malformed timestamp), naming the record and field.
        """
        text = self.frame(records)
        n = len(text)
        bad = BadRows("skip", max_examples=1)
        idx = np.arange(n, dtype=np.int64)
        rows = self.encoder.encode_table(RawTable(text, idx, idx, 0), bad, "record")
        if bad.count:
            m = _BAD_ROW.match(bad.examples[0])
            msg = f"record {m.group(1)}: field {m.group(2)!r}: {m.group(3)}" if m else bad.examples[0]
            raise RequestError(msg)
        return rows

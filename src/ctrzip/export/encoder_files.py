"""The raw-row encoder an artifact carries, so that a model folder can score raw rows by itself.

Layout inside an artifact folder::

    encoder/encoder.json        dataset config (format, fields, transforms) + fitted normalizers
    encoder/vocab/<field>.json  per sparse field: the kept values (value -> id = position + 1)

They are the files ``ctrzip.data.encode.Encoder.save`` wrote beside the encoded dataset the
model was trained on, copied byte for byte: JSON only (nothing is unpickled), and every one of
them is listed in ``checksums.json``. An artifact saved without them still loads; encoding raw
rows with it is refused by ``load_encoder`` with a message saying how to add them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ctrzip.data.encode import Encoder
from ctrzip.data.schema import FeatureSchema
from ctrzip.export.errors import ArtifactError, MissingEncoderError

ENCODER_DIR = "encoder"


def source_dir(encoder: Any, model: Any) -> Path | None:
    """The folder holding ``encoder.json`` to copy into an artifact, or None.

    Args:
        encoder: an encoded dataset folder, an ``EncodedDataset`` (its ``root``), an artifact
            folder that carries an encoder, or None: the encoder of the artifact ``model`` was
            loaded from (``model.encoder_source``), if any.
        model: the model being saved.
    """
    if encoder is None:
        return getattr(model, "encoder_source", None)
    root = Path(encoder) if isinstance(encoder, (str, os.PathLike)) else Path(encoder.root)
    if (root / "encoder.json").is_file():
        return root
    if (root / ENCODER_DIR / "encoder.json").is_file():
        return root / ENCODER_DIR
    raise ArtifactError(
        f"{root}: no encoder.json (nor {ENCODER_DIR}/encoder.json); give the encoded dataset folder "
        "the model was trained on (written by ctrzip data encode)"
    )


def of_dataset(data: Any) -> Path | None:
    """The folder of encoded dataset ``data`` (an ``EncodedDataset``) if it holds an encoder
    (datasets written by ``ctrzip data encode`` do; arrays saved by hand do not)."""
    root = Path(data.root)
    return root if (root / "encoder.json").is_file() else None


def read_encoder(source: Path, schema: FeatureSchema, sums: dict[str, str] | None = None) -> dict[str, bytes]:
    """``{name: bytes}`` of the encoder files in ``source`` (names relative to ``encoder/``).

    Args:
        source: a folder with ``encoder.json`` and ``vocab/``.
        schema: the model's schema; the encoder must produce exactly its fields.
        sums: sha256 per name recorded when ``source`` was verified (an artifact loaded
            earlier); a file that changed since is refused.

    Raises:
        ArtifactError: a file is missing, does not parse, changed since it was verified, or the
            encoder's fields (names, kinds, vocabulary sizes) differ from ``schema``'s.
    """
    enc = _parse(source)
    names = ["encoder.json"] + [f"vocab/{name}.json" for name in enc.vocabs]
    files = {name: (source / name).read_bytes() for name in names}
    for name, data in files.items():
        if sums is not None and hashlib.sha256(data).hexdigest() != sums.get(name):
            raise ArtifactError(f"{source / name}: changed since the artifact was loaded; load it again")
    mine, theirs = _fields(enc.schema()), _fields(schema)
    if mine != theirs:
        first = next((a[0] for a, b in zip(mine, theirs, strict=False) if a != b), None)
        what = f"field {first!r} differs" if first else f"{len(mine)} fields vs {len(theirs)}"
        raise ArtifactError(
            f"{source}: the encoder does not match the model's schema ({what}); give the encoded "
            "dataset the model was trained on"
        )
    return files


def _fields(schema: FeatureSchema) -> list[tuple[Any, ...]]:
    return [(f.name, f.kind, f.vocab_size, f.max_len) for f in schema.fields]


def _parse(source: Path) -> Encoder:
    """``Encoder.load`` with its errors as ``ArtifactError`` naming the file."""
    try:
        return Encoder.load(source)
    except FileNotFoundError as err:
        raise ArtifactError(f"{err.filename or source}: missing (the encoder is incomplete)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ArtifactError(
            f"{source}: the encoder files do not parse ({type(err).__name__}: {err})"
        ) from None
    except ValueError as err:  # ConfigError / version mismatch
        raise ArtifactError(f"{source}/encoder.json: {err}") from None


def write_encoder(path: Path, files: dict[str, bytes] | None) -> dict[str, str]:
    """Replace ``path/encoder`` with ``files`` (None: remove a stale one); sha256 per file,
    keyed ``encoder/<name>`` as ``checksums.json`` lists them."""
    final = path / ENCODER_DIR
    if files is None:
        shutil.rmtree(final, ignore_errors=True)
        return {}
    tmp = path / f"{ENCODER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    old = path / f"{ENCODER_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return {f"{ENCODER_DIR}/{n}": hashlib.sha256(d).hexdigest() for n, d in files.items()}


def checked_entries(sums_file: Path, sums: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    """The entries of ``checksums.json`` besides ``required``: encoder files only, never a path
    out of the folder.

    Raises:
        ArtifactError: another entry, naming it.
    """
    extra = [n for n in sums if n not in required]
    for name in extra:
        if not name.startswith(f"{ENCODER_DIR}/") or ".." in name.split("/") or "\\" in name:
            raise ArtifactError(f"{sums_file}: unexpected entry {name!r}; refusing to load")
    return extra


def check_unlisted(path: Path, sums: dict[str, Any]) -> None:
    """Refuse a file under ``path/encoder`` that ``checksums.json`` does not list (added later)."""
    root = path / ENCODER_DIR
    if not root.is_dir():
        return
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(path).as_posix() not in sums:
            raise ArtifactError(f"{p}: not listed in checksums.json; refusing to load")


def loaded_source(path: Path, sums: dict[str, Any]) -> tuple[Path | None, dict[str, str]]:
    """``(encoder folder or None, sha256 per encoder file)`` of a verified artifact, remembered by
    ``load`` so that saving the model again carries the same encoder along."""
    root = path / ENCODER_DIR
    mine = {n.split("/", 1)[1]: h for n, h in sums.items() if n.startswith(f"{ENCODER_DIR}/")}
    return (root if (root / "encoder.json").is_file() else None), mine


def load_encoder(path: str | Path) -> Encoder:
    """The raw-row encoder of artifact folder ``path`` (checksums verified first).

    Raises:
        MissingEncoderError: the artifact carries no encoder (saved by an older ctrzip, or from a
            model trained on arrays rather than an encoded dataset); the message says how to add it.
        ArtifactError: the folder is not a valid artifact, or its encoder files do not parse.
    """
    from ctrzip.export.artifact import verify

    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"{path}: not a ctrzip artifact (no manifest.json)")
    verify(path)
    if not (path / ENCODER_DIR / "encoder.json").is_file():
        raise MissingEncoderError(
            f"{path}: the artifact has no {ENCODER_DIR}/ (vocabularies and transforms), so it cannot "
            f"encode raw rows; add it from the encoded dataset it was trained on: "
            f"ctrzip.save('{path}', ctrzip.load('{path}'), encoder='DATA_DIR', overwrite=True)"
        )
    return _parse(path / ENCODER_DIR)

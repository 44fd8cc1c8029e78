"""Save and load a (possibly compressed) model as a pickle-free folder.

Layout::

    model.safetensors   every parameter and buffer (codes included)
    manifest.json       model registry key + config, swapped modules {fqn: {type, spec}},
                        compression log, versions, ``storage`` (tensor bytes and the
                        safetensors file's size on disk)
    schema.json         the FeatureSchema the model was trained on
    encoder/            optional: encoder.json + vocab/<field>.json, what encodes raw rows
                        (``encoder_files``; written when the model comes from an encoded dataset)
    checksums.json      sha256 of every file above

``load`` rebuilds the float model from the manifest, replays each swapped module with its
``empty(**spec)`` constructor, then loads the weights strictly. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ctrzip._version import __version__
from ctrzip.data.schema import FeatureSchema
from ctrzip.errors import UserError
from ctrzip.export import encoder_files
from ctrzip.export.errors import ArtifactError
from ctrzip.models.base import CTRModel, build_model
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.swappable import SWAPPABLE, put_module, relink_all

FORMAT_VERSION = 1
_FILES = ("model.safetensors", "manifest.json", "schema.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def swapped_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{fqn: {"type", "spec"}} for every swappable module that is not a default DenseTable.

    Parents come before their children (``named_modules`` order), so a swapped module nested
    in another one (a ``FoldedLinear`` as a ``LowRankLinear``'s first factor, after two
    compressions) is replayed after its parent's ``empty()`` built the default child.
    """
    out: dict[str, dict[str, Any]] = {}
    for fqn, mod in model.named_modules():
        if not fqn:
            continue
        name = type(mod).__name__
        if name not in SWAPPABLE or type(mod) is DenseTable:
            continue
        out[fqn] = {"type": name, "spec": mod.spec()}  # type: ignore[operator]
    return out


def _state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    state, seen = {}, {}
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        # safetensors refuses aliased tensors: store a private copy of any alias
        state[k] = t.clone().contiguous() if key in seen else t.contiguous()
        seen[key] = k
    return state


def tensor_file_bytes(file: str | Path) -> int:
    """Bytes of the tensors stored in a ``.safetensors`` file, from its header (nothing loaded)."""
    with Path(file).open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(e["data_offsets"][1] - e["data_offsets"][0] for k, e in header.items() if k != "__metadata__")


def artifact_sizes(path: str | Path) -> dict[str, Any]:
    """Sizes of a saved artifact: ``tensor_bytes`` (the tensors in ``model.safetensors``, equal to
    ``ctrzip.compression.sizes.stored_bytes`` of the saved model), ``files`` (bytes on disk per
    file, ``encoder/...`` included) and ``disk_bytes`` (their sum: what the folder takes,
    headers, JSON and the raw-row encoder included)."""
    path = Path(path)
    files = {f.relative_to(path).as_posix(): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    return {
        "tensor_bytes": tensor_file_bytes(path / "model.safetensors"),
        "files": files,
        "disk_bytes": sum(files.values()),
    }


def check_destination(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse to write an artifact over an existing one (or any non-empty folder or a file).

    Args:
        path: the artifact folder about to be written.
        overwrite: allow replacing an existing folder's artifact files.

    Raises:
        ArtifactError: ``path`` is a file, or an existing non-empty folder and not ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{path}: exists and is a file, not an artifact folder; choose another path")
    if not overwrite and path.is_dir() and any(path.iterdir()):
        what = "an artifact" if (path / "manifest.json").exists() else "a non-empty folder"
        raise ArtifactError(
            f"{path}: already exists ({what}); pass --overwrite (overwrite=True in Python) to "
            "replace it, or choose another path"
        )
    return path


def save(
    path: str | Path,
    model: CTRModel,
    extra: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    encoder: Any = None,
) -> Path:
    """Write ``model`` to folder ``path`` (created; files replaced atomically one by one).

    Args:
        path: the artifact folder.
        model: the (possibly compressed) model.
        extra: JSON-able data stored under ``manifest["extra"]``.
        overwrite: replace an existing artifact (or write into a non-empty folder).
        encoder: what lets the artifact encode raw rows (``ctrzip predict``, ``ctrzip serve``):
            the encoded dataset the model was trained on (its folder or ``EncodedDataset``), or
            an artifact folder carrying one. None: the encoder of the artifact the model was
            loaded from, if any; otherwise the artifact scores encoded batches only.

    The manifest's ``storage`` gives ``tensor_bytes`` (the model's stored size, as
    ``ctrzip.compression.sizes.size_report`` counts it) and ``safetensors_file_bytes`` (that
    file's size on disk); ``artifact_sizes`` measures the whole folder afterwards.

    Raises:
        ArtifactError: ``path`` already holds an artifact or other files and not ``overwrite``;
            the folder cannot be written (disk full, permission denied), naming it; a module
            reads a module that is not in the model; ``encoder`` has no encoder files or its
            fields differ from the model's schema.
    """
    path = check_destination(path, overwrite)
    source = encoder_files.source_dir(encoder, model)
    sums = getattr(model, "encoder_sums", None) if encoder is None else None
    # read before writing anything: the source may be this very folder (--overwrite)
    files = encoder_files.read_encoder(source, model.schema, sums) if source is not None else None
    try:
        return _save(path, model, extra, files)
    except OSError as err:
        where = err.filename or path
        raise ArtifactError(f"{where}: cannot write the artifact ({err.strerror or err})") from err


def _save(path: Path, model: CTRModel, extra: dict[str, Any] | None, files: dict[str, bytes] | None) -> Path:
    try:  # a module reading a table that is gone would save without the tensors it needs
        relink_all(model)
    except (TypeError, ValueError) as err:
        raise ArtifactError(
            f"cannot save {path}: {err}; replace modules with ctrzip.nn.swappable.replace_module, "
            "which hands links over"
        ) from err
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "model.safetensors.tmp"
    save_file(
        # one metadata key: safetensors writes a dict's keys in a per-process random order, and
        # the same model must give the same bytes (and checksums) every time
        _state_for_saving(model),
        str(tmp),
        metadata={"format": f"ctrzip/{FORMAT_VERSION}"},
    )
    os.replace(tmp, path / "model.safetensors")
    storage = {
        "tensor_bytes": tensor_file_bytes(path / "model.safetensors"),
        "safetensors_file_bytes": (path / "model.safetensors").stat().st_size,
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "ctrzip_version": __version__,
        "torch_version": torch.__version__,
        **model.spec(),
        "modules": swapped_modules(model),
        "compression_log": getattr(model, "compression_log", []),
        "extra": extra or {},
        "storage": storage,
    }
    _atomic_write(path / "manifest.json", json.dumps(manifest, indent=2).encode())
    _atomic_write(path / "schema.json", json.dumps(model.schema.to_dict(), indent=2).encode())
    sums = {name: _sha256(path / name) for name in _FILES}
    sums.update(encoder_files.write_encoder(path, files))
    _atomic_write(path / "checksums.json", json.dumps(sums, indent=2).encode())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file of an artifact; ``ArtifactError`` naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of artifact folder ``path`` (not verified: ``load`` verifies first).

    Raises:
        ArtifactError: no manifest, or a manifest that is not a JSON object.
    """
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"{path}: not a ctrzip artifact (no manifest.json)")
    return _read_json(path / "manifest.json")


def verify(path: str | Path) -> dict[str, Any]:
    """Check every file against checksums.json (returned); raise ``ArtifactError`` naming the bad
    file, or an encoder file that checksums.json does not list."""
    path = Path(path)
    sums_file = path / "checksums.json"
    if not sums_file.exists():
        raise ArtifactError(f"{path}: no checksums.json; refusing to load an unverified artifact")
    sums = _read_json(sums_file)
    for name in (*_FILES, *encoder_files.checked_entries(sums_file, sums, _FILES)):
        f = path / name
        if not f.exists():
            raise ArtifactError(f"{f}: missing")
        if _sha256(f) != sums.get(name):
            raise ArtifactError(f"{f}: checksum mismatch (file changed or corrupt); refusing to load")
    encoder_files.check_unlisted(path, sums)
    return sums


def load(path: str | Path, device: str | torch.device = "cpu") -> CTRModel:
    """Rebuild a saved model (compressed modules included) and load its weights strictly.

    Order: the folder must look like an artifact, every file must match ``checksums.json``,
    and only then is anything parsed, so a corrupt or edited file is reported as such.

    Raises:
        ArtifactError: missing folder or file, checksum mismatch, a file that does not parse,
            or a manifest (model, config, module specs) that does not rebuild the saved weights;
            the message names the file and the key.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a ctrzip artifact (no such folder)")
    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"{path}: not a ctrzip artifact (no manifest.json)")
    sums = verify(path)
    mf = path / "manifest.json"
    manifest = read_manifest(path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{mf}: format_version {manifest.get('format_version')} is not supported")
    missing = [k for k in ("model", "config", "modules") if k not in manifest]
    if missing:
        raise ArtifactError(f"{mf}: missing key(s) {missing}")
    try:
        schema = FeatureSchema.load(path / "schema.json")
    except ValueError as err:
        raise ArtifactError(f"{path / 'schema.json'}: not a valid schema ({err})") from None
    try:
        model = build_model(manifest["model"], schema, manifest["config"])
    except (UserError, TypeError, ValueError) as err:
        raise ArtifactError(f"{mf}: model/config do not build a model ({err})") from None
    for fqn, entry in manifest["modules"].items():
        try:
            cls = SWAPPABLE.get(entry["type"])
            put_module(model, fqn, cls.empty(**entry["spec"]))  # type: ignore[attr-defined]  # links: below
        except (UserError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise ArtifactError(
                f"{mf}: modules.{fqn} does not rebuild ({type(err).__name__}: {err})"
            ) from None
    try:
        state = load_file(str(path / "model.safetensors"))
        result = model.load_state_dict(state, strict=False)
    except Exception as err:  # safetensors' own error type, or torch's size-mismatch RuntimeError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(
            f"{path}/model.safetensors does not match the manifest's model: {first}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactError(
            f"{path}/model.safetensors does not match the manifest's model: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    try:  # reconnect folded consumers and shared-code tables (plain Python state)
        relink_all(model)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{mf}: modules do not link up ({type(err).__name__}: {err})") from None
    model.compression_log = manifest.get("compression_log", [])
    # plain Python state, as compression_log: a later save() carries the encoder along
    model.encoder_source, model.encoder_sums = encoder_files.loaded_source(path, sums)
    return model.to(device).eval()

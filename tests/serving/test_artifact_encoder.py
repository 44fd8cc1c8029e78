"""An artifact carries the encoder of its training data (issue 11, item 1): written, verified,
carried along by load -> save, removed when replaced, and refused when tampered with."""

from __future__ import annotations

import json
import shutil

import pytest

import ctrzip
from ctrzip.data.encode import Encoder
from ctrzip.export import ArtifactError, MissingEncoderError, load, load_encoder, save

from ._fixtures import criteo_files, ml100k_files, shared, tiny_model


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):  # type: ignore[no-untyped-def]
    return criteo_files(shared(), tmp_path_factory.mktemp("criteo") / "enc")


def _sums(path):  # type: ignore[no-untyped-def]
    return json.loads((path / "checksums.json").read_text())


def test_save_with_dataset_writes_encoder_files_and_checksums(criteo, tmp_path) -> None:
    art = save(tmp_path / "a", tiny_model(criteo), encoder=criteo)
    names = {p.relative_to(art).as_posix() for p in (art / "encoder").rglob("*") if p.is_file()}
    assert names == {"encoder/encoder.json"} | {f"encoder/vocab/C{i}.json" for i in range(1, 27)} | {
        f"encoder/vocab/I{i}.json" for i in range(1, 14)
    }
    assert names <= set(_sums(art))
    for name in names:  # byte-identical copies of the dataset's files
        assert (art / name).read_bytes() == (criteo.root / name.split("/", 1)[1]).read_bytes()
    enc, ref = load_encoder(art), Encoder.load(criteo.root)
    assert enc.vocabs == ref.vocabs and enc.normalizers == ref.normalizers
    assert not list(art.rglob("*.pkl")) and not list(art.rglob("*.pt"))


def test_loaded_model_carries_its_encoder_to_a_new_artifact(criteo, tmp_path) -> None:
    save(tmp_path / "a", tiny_model(criteo), encoder=criteo.root)  # a folder works too
    save(tmp_path / "b", load(tmp_path / "a"))
    assert load_encoder(tmp_path / "b").vocabs == Encoder.load(criteo.root).vocabs
    # replacing the artifact in place (compress --out == --model --overwrite) keeps it as well
    save(tmp_path / "a", load(tmp_path / "a"), overwrite=True)
    assert load_encoder(tmp_path / "a").vocabs == Encoder.load(criteo.root).vocabs
    # and an artifact folder is accepted as the source
    save(tmp_path / "c", tiny_model(criteo), encoder=tmp_path / "b")
    assert (tmp_path / "c" / "encoder" / "encoder.json").read_bytes() == (
        criteo.root / "encoder.json"
    ).read_bytes()


def test_old_artifact_without_encoder_loads_but_cannot_encode(criteo, tmp_path) -> None:
    model = tiny_model(criteo)
    art = save(tmp_path / "old", model)
    assert not (art / "encoder").exists() and set(_sums(art)) == {
        "model.safetensors",
        "manifest.json",
        "schema.json",
    }
    load(art)  # still loads
    with pytest.raises(MissingEncoderError) as err:
        load_encoder(art)
    msg = str(err.value)
    assert "\n" not in msg and str(art) in msg and "encoder/" in msg and "encoder='DATA_DIR'" in msg


def test_overwriting_with_a_model_without_encoder_removes_the_stale_one(criteo, tmp_path) -> None:
    save(tmp_path / "a", tiny_model(criteo), encoder=criteo)
    fresh = tiny_model(criteo, seed=1)  # built in memory: no encoder to carry
    save(tmp_path / "a", fresh, overwrite=True)
    assert not (tmp_path / "a" / "encoder").exists()
    with pytest.raises(MissingEncoderError):
        load_encoder(tmp_path / "a")


def test_encoder_of_another_dataset_is_refused(criteo, shared_data, tmp_path) -> None:
    ml = ml100k_files(shared_data, tmp_path / "ml")
    with pytest.raises(ArtifactError, match=r"does not match the model's schema \(field 'user_id' differs"):
        save(tmp_path / "a", tiny_model(criteo), encoder=ml)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ArtifactError, match="no encoder.json"):
        save(tmp_path / "b", tiny_model(criteo), encoder=tmp_path)


@pytest.mark.parametrize(
    "tamper",
    ["edit_vocab", "delete_vocab", "add_file", "bad_entry", "edit_encoder_json"],
)
def test_tampered_encoder_is_refused(criteo, tmp_path, tamper) -> None:
    art = save(tmp_path / "a", tiny_model(criteo), encoder=criteo)
    vocab = art / "encoder" / "vocab" / "C3.json"
    expected = {
        "edit_vocab": f"{vocab}: checksum mismatch",
        "delete_vocab": f"{vocab}: missing",
        "add_file": f"{art / 'encoder' / 'vocab' / 'C99.json'}: not listed in checksums.json",
        "bad_entry": "unexpected entry '../secret'",
        "edit_encoder_json": "encoder.json: checksum mismatch",
    }[tamper]
    if tamper == "edit_vocab":
        vocab.write_text(vocab.read_text().replace('"values": ["', '"values": ["x', 1))
    elif tamper == "delete_vocab":
        vocab.unlink()
    elif tamper == "add_file":
        shutil.copy(vocab, art / "encoder" / "vocab" / "C99.json")
    elif tamper == "bad_entry":
        sums = _sums(art)
        sums["../secret"] = "0" * 64
        (art / "checksums.json").write_text(json.dumps(sums))
    else:
        f = art / "encoder" / "encoder.json"
        f.write_text(f.read_text().replace('"min_count": 2', '"min_count": 3', 1))
    for fn in (load, load_encoder):
        with pytest.raises(ArtifactError) as err:
            fn(art)
        assert expected in str(err.value) and "\n" not in str(err.value)


def test_encoder_changed_after_load_is_not_carried(criteo, tmp_path) -> None:
    art = save(tmp_path / "a", tiny_model(criteo), encoder=criteo)
    model = load(art)
    vocab = art / "encoder" / "vocab" / "C1.json"
    vocab.write_text(vocab.read_text().replace('"values": ["', '"values": ["y', 1))
    with pytest.raises(ArtifactError, match="C1.json: changed since the artifact was loaded"):
        save(tmp_path / "b", model)


def test_public_save_takes_encoder(criteo, tmp_path) -> None:
    ctrzip.save(tmp_path / "a", tiny_model(criteo), encoder=criteo)
    assert (tmp_path / "a" / "encoder" / "encoder.json").is_file()

"""``save`` never replaces an existing artifact (or writes into a non-empty folder) unless asked."""

from __future__ import annotations

import pytest
import torch

from ctrzip.export import ArtifactError, check_destination, load, save
from ctrzip.models import build_model


def _model(tiny_schema, seed: int):
    return build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]}, seed=seed).eval()


def test_save_refuses_an_existing_artifact_and_keeps_it(tmp_path, tiny_schema, tiny_batch) -> None:
    first, second = _model(tiny_schema, 0), _model(tiny_schema, 1)
    save(tmp_path / "a", first)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(
        ArtifactError, match=r"a: already exists \(an artifact\); pass --overwrite \(overwrite=True"
    ):
        save(tmp_path / "a", second)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    save(tmp_path / "a", second, overwrite=True)
    back = load(tmp_path / "a")
    assert torch.equal(back(tiny_batch), second(tiny_batch))
    assert not torch.equal(back(tiny_batch), first(tiny_batch))


def test_save_refuses_a_non_empty_folder_and_a_file(tmp_path, tiny_schema) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"run: already exists \(a non-empty folder\)"):
        save(tmp_path / "run", _model(tiny_schema, 0))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match="f: exists and is a file"):
        save(tmp_path / "f", _model(tiny_schema, 0), overwrite=True)
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty", _model(tiny_schema, 0))  # an empty folder is fine
    assert (tmp_path / "empty" / "manifest.json").exists()


def test_check_destination_only_reads(tmp_path) -> None:
    assert check_destination(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()


def test_same_model_saves_to_the_same_bytes(tmp_path, tiny_schema) -> None:
    model = _model(tiny_schema, 0)
    files = []
    for i in range(6):  # two metadata keys came out in either order: 6 saves agree by chance 1/32
        save(tmp_path / str(i), model)
        files.append({p.name: p.read_bytes() for p in sorted((tmp_path / str(i)).iterdir())})
    assert all(f == files[0] for f in files)  # checksums.json included: reproducible artifacts

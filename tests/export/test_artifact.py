import json

import pytest
import torch

from ctrzip.export import ArtifactError, load, save
from ctrzip.models import build_model


def test_round_trip_identical_predictions(tmp_path, tiny_schema, tiny_batch):
    model = build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.load_state_dict(model.state_dict())  # as a loaded state: the padding rows are zero again
    save(tmp_path / "a", model)
    back = load(tmp_path / "a")
    assert torch.equal(model(tiny_batch), back(tiny_batch))
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["model"] == "deepfm" and man["config"]["mlp"] == [8]


def test_checksum_mismatch_refuses(tmp_path, tiny_schema):
    model = build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]})
    save(tmp_path / "a", model)
    f = tmp_path / "a" / "schema.json"
    f.write_text(f.read_text().replace('"label"', '"lbl"', 1))
    with pytest.raises(ArtifactError, match="schema.json: checksum mismatch"):
        load(tmp_path / "a")
    with pytest.raises(ArtifactError, match="not a ctrzip artifact"):
        load(tmp_path / "missing")

"""The README's Python example runs as written (on a small synthetic dataset)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ctrzip.data.encode import encode_dataset
from ctrzip.data.synthetic import generate

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    raw = tmp_path / "data" / "criteo_like.txt"
    raw.parent.mkdir()
    generate("criteo-like", raw, rows=5000, seed=3, progress=False)
    encode_dataset("criteo", raw, tmp_path / "data" / "criteo_like_encoded", progress=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    # 5,000 rows give fields of at most a few hundred ids: the README's K = 256 and min_vocab
    # (10,000) would shrink none of them, and compress refuses that; scale them to this data.
    readme_mec = "MECConfig(num_subspaces=4, codebook_size=256)"
    assert readme_mec in blocks[0]
    code = blocks[0].replace(
        readme_mec,
        'MECConfig.variant("mec", num_subspaces=4, codebook_size=16, min_vocab=200, steps=5, batch_size=256)',
    )
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "deepfm_mec_lowrank" / "model.safetensors").exists()
    import ctrzip

    back = ctrzip.load(tmp_path / "runs" / "deepfm_mec_lowrank")
    assert any(type(m).__name__ == "LowRankLinear" for m in back.modules())
    # the artifact scores raw rows by itself: the same rows as the encoded dataset, same numbers
    from ctrzip.data.config import load_dataset_config
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.data.split import SplitAssigner
    from ctrzip.train.evaluation import predict as predict_arrays

    probs = ctrzip.predict(tmp_path / "runs" / "deepfm_mec_lowrank", raw, device="cpu")
    data = EncodedDataset.open(tmp_path / "data" / "criteo_like_encoded")
    assert probs.shape == (5000,) and np.isfinite(probs).all()
    test_rows = np.flatnonzero(
        SplitAssigner(load_dataset_config("criteo").split).assign(np.arange(5000)) == 2
    )
    want = predict_arrays(back, data["test"], device="cpu")
    np.testing.assert_allclose(probs[test_rows], want, rtol=0, atol=1e-6)

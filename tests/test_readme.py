"""The README's Python example runs as written (on a small synthetic dataset)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ctrzip.data.encode import encode_dataset
from ctrzip.data.synthetic import generate

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    raw = tmp_path / "raw.txt"
    generate("criteo-like", raw, rows=5000, seed=3, progress=False)
    encode_dataset("criteo", raw, tmp_path / "data" / "criteo_like_encoded", progress=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "deepfm_mec_lowrank" / "model.safetensors").exists()
    import ctrzip

    back = ctrzip.load(tmp_path / "runs" / "deepfm_mec_lowrank")
    assert any(type(m).__name__ == "LowRankLinear" for m in back.modules())

"""``ctrzip serve`` (issue 11, item 3): the app through FastAPI's TestClient, and one real
loopback start -> score -> malformed requests -> shutdown of the command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ctrzip
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.export import save

from ._fixtures import COMPOSE_CONFIG, tiny_model, write_compose_raw

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from ctrzip.serving.app import create_app  # noqa: E402

RECORDS = [
    {"big": "b3", "tags": "t1^t5", "small": "s2", "x": 1.5},
    {"big": "b-unseen", "tags": ["t2", "t-unseen"], "small": None, "x": 7},  # unseen, list, null
    {},  # every field missing
]
# (body, status, words the message must hold): the malformed-request set
MALFORMED: list[tuple[bytes, int, list[str]]] = [
    (b"{not json", 400, ["malformed JSON at line 1 column 2"]),
    (b"", 400, ["malformed JSON"]),
    (b"\xff\xfe", 400, ["malformed JSON"]),
    (b"[" * 5_000, 400, ["malformed JSON (nested too deeply)"]),
    (b'{"records": [{"x": 1' + b"0" * 5_000 + b"}]}", 400, ["malformed JSON", "integer"]),
    (b'{"records": [{"big": ' + b"[" * 3_000 + b"]" * 3_000 + b"}]}", 400, ["nested too deeply"]),
    (b"[1, 2]", 422, ['{"records": [...]}']),
    (b'{"rows": []}', 422, ['{"records": [...]}']),
    (b'{"records": [], "extra": 1}', 422, ["unknown key 'extra'"]),
    (b'{"records": {"big": "b1"}}', 422, ["records: expected an array of objects, got object"]),
    (b'{"records": [{"big": "b1"}, 5]}', 422, ["record 1: expected an object", "got integer"]),
    (b'{"records": [{"big": "b1"}, {"colour": "red"}]}', 422, ["record 1: unknown field 'colour'"]),
    (b'{"records": [{"label": 1}]}', 422, ["record 0: unknown field 'label'"]),
    (b'{"records": [{"x": "1.5"}]}', 422, ["record 0: field 'x': expected integer or number", "got string"]),
    (b'{"records": [{"x": true}]}', 422, ["record 0: field 'x'", "got boolean"]),
    (
        b'{"records": [{}, {"big": 1.5}]}',
        422,
        ["record 1: field 'big': expected integer or string", "number"],
    ),
    (b'{"records": [{"big": {"a": 1}}]}', 422, ["record 0: field 'big'", "got object"]),
    (b'{"records": [{"tags": [["t1"]]}]}', 422, ["record 0: field 'tags': items must be strings"]),
    (b'{"records": [{"tags": ["t1^t2"]}]}', 422, ["record 0: field 'tags'", "without '^'"]),
    (b'{"records": [{"x": NaN}]}', 422, ["record 0: field 'x': nan is not a finite number"]),
    (b'{"records": [{}, {}, {"x": 1e39}]}', 422, ["record 2: field 'x'", "fits float32"]),
    (json.dumps({"records": [{}] * 9}).encode(), 413, ["records: 9 records, at most 8 per request"]),
]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("serve")
    train = write_compose_raw(root / "train.csv", 400, 0)
    encode_dataset(COMPOSE_CONFIG, {"train": train}, root / "enc", progress=False)
    model = tiny_model(EncodedDataset.open(root / "enc"))
    return save(root / "art", model, encoder=root / "enc")


@pytest.fixture(scope="module")
def client(artifact) -> TestClient:  # type: ignore[no-untyped-def]
    pred = ctrzip.Predictor.load(artifact, device="cpu")
    return TestClient(create_app(pred, path=artifact, max_batch=8, max_body_mb=0.01))


def _expected(artifact: Path, records: list[dict]) -> np.ndarray:  # type: ignore[type-arg]
    """The same records as a raw frame through ``ctrzip.predict`` (the file path's encoder)."""
    cols = {c: [] for c in ("big", "tags", "small", "x")}  # type: ignore[var-annotated]
    for r in records:
        for c in cols:
            v = r.get(c)
            cols[c].append("^".join(v) if isinstance(v, list) else None if v is None else str(v))
    return ctrzip.Predictor.load(artifact, device="cpu").predict(
        pl.DataFrame(cols, schema={c: pl.String for c in cols})
    )


def test_predict_health_metadata(client, artifact) -> None:
    res = client.post("/predict", json={"records": RECORDS})
    assert res.status_code == 200, res.text
    got = np.array(res.json()["probabilities"])
    np.testing.assert_allclose(got, _expected(artifact, RECORDS), rtol=0, atol=1e-7)
    assert len(set(got.round(6))) == 3  # three different rows, three different scores
    assert client.post("/predict", json={"records": []}).json() == {"probabilities": []}
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["model"] == "deepfm" and meta["method"] == "dense" and meta["name"] == "art"
    assert meta["version"]["ctrzip"] == ctrzip.__version__ and meta["version"]["artifact_format"] == 1
    assert (
        meta["bytes"]["tensors"] == meta["bytes"]["model"] > 0
        and meta["bytes"]["disk"] > meta["bytes"]["tensors"]
    )
    fields = meta["request"]["fields"]
    assert set(fields) == {"big", "tags", "small", "x"} and meta["request"]["max_records"] == 8
    assert fields["x"]["types"] == ["integer", "null", "number"] and fields["tags"]["separator"] == "^"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    MALFORMED,
    ids=[m[0][:30].decode("latin-1") + str(len(m[0])) for m in MALFORMED],
)
def test_malformed_requests_get_a_4xx_naming_record_and_field(client, body, status, words) -> None:
    res = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert res.status_code == status, res.text
    detail = res.json()["detail"]
    assert "\n" not in detail and all(w in detail for w in words), detail
    assert client.get("/health").status_code == 200  # still up


def test_oversized_body_and_wrong_routes_are_4xx(client) -> None:
    big = json.dumps({"records": [{"big": "b" * 20000}]}).encode()
    res = client.post("/predict", content=big)
    assert res.status_code == 413 and "at most 10,485 bytes" in res.json()["detail"]
    assert client.get("/predict").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404


def test_a_compressed_model_reports_its_method(artifact, tmp_path) -> None:
    data = EncodedDataset.open(artifact.parent / "enc")
    model = ctrzip.load(artifact)
    ctrzip.compress(model, ctrzip.RowwiseConfig(bits=8, eval_split=None, device="cpu"), data)
    small = save(tmp_path / "int8", model)  # the encoder comes along from the loaded artifact
    app = create_app(ctrzip.Predictor.load(small, device="cpu"), path=small)
    meta = TestClient(app).get("/metadata").json()
    dense = TestClient(create_app(ctrzip.Predictor.load(artifact, device="cpu"), path=artifact))
    assert (
        meta["method"] == "rowwise"
        and meta["bytes"]["model"] < dense.get("/metadata").json()["bytes"]["model"]
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_on_loopback_start_score_reject_shutdown(artifact, tmp_path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(ctrzip.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [sys.executable, "-m", "ctrzip.cli.main", "serve", "--model", str(artifact), "--port", str(port),
           "--max-batch", "8", "--device", "cpu"]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=10) as http:
            res = http.post("/predict", json={"records": RECORDS})
            assert res.status_code == 200
            np.testing.assert_allclose(res.json()["probabilities"], _expected(artifact, RECORDS), atol=1e-7)
            statuses = []
            for body, status, words in MALFORMED:
                r = http.post("/predict", content=body, headers={"content-type": "application/json"})
                statuses.append(r.status_code)
                assert r.status_code == status and all(w in r.json()["detail"] for w in words), r.text
            assert not [s for s in statuses if s >= 500] and proc.poll() is None
            assert http.get("/metadata").json()["request"]["max_records"] == 8
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert rc == 0, (tmp_path / "server.log").read_text()
    assert "serving" in (tmp_path / "server.log").read_text()


def test_serve_refuses_a_tampered_artifact_before_starting(artifact, tmp_path) -> None:
    import shutil

    from typer.testing import CliRunner

    from ctrzip.cli.main import app

    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    vocab = bad / "encoder" / "vocab" / "big.json"
    vocab.write_text(vocab.read_text().replace('"b', '"c', 1))
    res = CliRunner().invoke(app, ["serve", "--model", str(bad), "--port", "1"])
    assert res.exit_code == 2 and f"{vocab}: checksum mismatch" in res.output
    old = save(tmp_path / "old", ctrzip.load(artifact), encoder=None)
    shutil.rmtree(old / "encoder")  # as written before artifacts carried encoders
    sums = json.loads((old / "checksums.json").read_text())
    (old / "checksums.json").write_text(json.dumps({k: v for k, v in sums.items() if "/" not in k}))
    res = CliRunner().invoke(app, ["serve", "--model", str(old)])
    assert res.exit_code == 2 and f"{old}: the artifact has no encoder/" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["serve", "--model", str(artifact), "--max-batch", "0"])
    assert res.exit_code == 2 and "--max-batch must be >= 1" in res.output

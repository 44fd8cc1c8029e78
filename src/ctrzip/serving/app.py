"""The HTTP service of ``ctrzip serve``: FastAPI routes over a ``Predictor``.

``POST /predict`` ``{"records": [{field: value, ...}, ...]}`` -> ``{"probabilities": [...]}``;
``GET /health``; ``GET /metadata`` (model, method, versions, bytes, the request schema).
Every bad request is answered with a 4xx whose ``detail`` is one line naming the record and the
field (``RequestError``); an unexpected failure is a bug, answered with a 500 and logged, and
the service stays up either way. Needs the ``serve`` extra (fastapi, uvicorn).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ctrzip._version import __version__
from ctrzip.errors import UserError
from ctrzip.serving.predict import Predictor
from ctrzip.serving.records import RecordSchema, RequestError

log = logging.getLogger("ctrzip.serve")


def metadata(pred: Predictor, path: str | Path | None, schema: RecordSchema) -> dict[str, Any]:
    """What ``/metadata`` answers: model, method(s), versions, bytes, request schema."""
    from ctrzip.compression.sizes import size_report

    log_ = getattr(pred.model, "compression_log", []) or []
    methods = [str(e.get("method", "?")) for e in log_]
    out: dict[str, Any] = {
        "model": pred.model.registry_key,
        "method": " + ".join(methods) if methods else "dense",
        "version": {"ctrzip": __version__},
        "bytes": {"model": int(size_report(pred.model)["total"]["bytes"])},
        "request": schema.describe(),
        "device": str(pred.device),
    }
    if path is not None:
        from ctrzip.export import artifact_sizes
        from ctrzip.export.artifact import FORMAT_VERSION, read_manifest

        manifest = read_manifest(path)
        sizes = artifact_sizes(path)
        out["name"] = Path(path).resolve().name
        out["version"].update(artifact_format=FORMAT_VERSION, saved_by=manifest.get("ctrzip_version"))
        out["bytes"].update(tensors=sizes["tensor_bytes"], disk=sizes["disk_bytes"])
    return out


def create_app(
    pred: Predictor, *, path: str | Path | None = None, max_batch: int = 1024, max_body_mb: float = 16.0
) -> FastAPI:
    """A FastAPI app scoring raw records with ``pred``.

    Args:
        pred: the loaded model and its row encoder.
        path: the artifact folder (for ``/metadata``: name, format version, bytes on disk).
        max_batch: the most records per request (more: 413).
        max_body_mb: the largest request body in MiB (larger: 413, before it is read).
    """
    schema = RecordSchema(pred.encoder, max_batch)
    meta = metadata(pred, path, schema)
    lock = threading.Lock()  # one forward at a time; encoding runs concurrently
    limit = int(max_body_mb * (1 << 20))
    app = FastAPI(title=f"ctrzip: {meta.get('name', meta['model'])}", version=__version__)

    def score(body: bytes) -> list[float]:
        rows = schema.encode(schema.parse(body))
        with lock:
            return [float(p) for p in pred.score(rows)]

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limit:
            return _error(f"body: {int(size):,} bytes, at most {limit:,} bytes (--max-body-mb)", 413)
        body = await request.body()
        if len(body) > limit:
            return _error(f"body: {len(body):,} bytes, at most {limit:,} bytes (--max-body-mb)", 413)
        try:
            probs = await run_in_threadpool(score, body)
        except RequestError as err:
            return _error(str(err), err.status)
        except UserError as err:  # the encoder's own checks (e.g. a column it cannot read)
            return _error(str(err), 422)
        except Exception:  # a bug: logged with its traceback, answered, and the service goes on
            log.exception("predict failed")
            return _error("internal error while scoring (a bug; see the server log)", 500)
        return JSONResponse({"probabilities": probs})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def get_metadata() -> dict[str, Any]:
        return meta

    return app


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"detail": " ".join(message.split())}, status_code=status)

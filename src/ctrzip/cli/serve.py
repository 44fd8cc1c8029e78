"""``ctrzip serve --model DIR [--host 127.0.0.1 --port 8000]``: score raw records over HTTP."""

from __future__ import annotations

from pathlib import Path

import typer

from ctrzip.cli._common import checked_device, checked_min, console
from ctrzip.config import ConfigError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="artifact folder (from train or compress)"),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="address to listen on (127.0.0.1: this machine only)"
    ),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port)"),
    max_batch: int = typer.Option(1024, "--max-batch", help="most records per request (more: 413)"),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="largest request body in MiB (more: 413)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Serve a saved model: POST /predict {"records": [{field: value}]} -> {"probabilities": [...]}.

    GET /health answers {"status": "ok"}; GET /metadata the model, method, versions, bytes and
    the schema a request must follow. A bad request gets a 4xx naming the record and field.
    The artifact is verified (checksums) before the server starts.
    """
    from ctrzip.serving.app import create_app
    from ctrzip.serving.predict import Predictor

    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigError("ctrzip serve needs fastapi and uvicorn: pip install 'ctrzip[serve]'") from None
    checked_min(max_batch, 1, "--max-batch")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    if not max_body_mb > 0:
        raise ConfigError(f"--max-body-mb must be > 0, got {max_body_mb}")
    checked_device(device)
    pred = Predictor.load(model, device=device)
    app = create_app(pred, path=model, max_batch=max_batch, max_body_mb=max_body_mb)
    console.print(
        f"serving {model} ({pred.model.registry_key}, device {pred.device}) on http://{host}:{port}: "
        "POST /predict, GET /health, GET /metadata; Ctrl-C stops"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

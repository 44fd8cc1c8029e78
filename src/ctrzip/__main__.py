"""``python -m ctrzip`` (what ``torchrun -m ctrzip ...`` runs on every rank): the ``ctrzip`` CLI."""

from ctrzip.cli.main import app

if __name__ == "__main__":
    app(prog_name="ctrzip")

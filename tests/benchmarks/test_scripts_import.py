"""Every benchmark script imports against the current package: a moved module fails CI, not a
GPU session."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py"))
SHELL = sorted((ROOT / "benchmarks").glob("*.sh"))


def test_every_benchmark_module_imports() -> None:
    # one interpreter for all of them (torch is imported once); main() is never called
    code = "\n".join(
        [
            "import importlib.util, sys",
            f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})",
            "for path in sys.argv[1:]:",
            "    name = 'bench_' + path.rsplit('/', 1)[-1][:-3]",
            "    spec = importlib.util.spec_from_file_location(name, path)",
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, SCRIPTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("script", SHELL, ids=lambda p: p.name)
def test_shell_scripts_import_existing_ctrzip_modules(script: Path) -> None:
    import importlib

    names = re.findall(r"^\s*(?:from|import) (ctrzip[\w.]*)", script.read_text(), flags=re.M)
    for name in names:
        importlib.import_module(name)
    for mod, attr in re.findall(r"^\s*from (ctrzip[\w.]*) import (\w+)", script.read_text(), flags=re.M):
        assert hasattr(importlib.import_module(mod), attr), f"{script.name}: {mod} has no {attr}"

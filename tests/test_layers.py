"""The package's shape: the import-linter contracts hold (and break on a violation), modules and functions
stay small (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src" / "decpo"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# the exceptions named in docs/ARCHITECTURE.md ("Where the limits are"), as (path, function or None)
EXCEPTIONS: set[tuple[str, str | None]] = set()


def _lint_imports(src_root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the repository's contracts, on the package found under ``src_root``."""
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(src_root)}
    return subprocess.run(
        [str(exe), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=src_root,
        timeout=300,
    )


def test_the_layer_contracts_hold():
    done = _lint_imports(REPO / "src")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the data layer importing the command line: an upward import
        ("data/errors.py", "import decpo.cli.main  # noqa", "layers: each package imports only"),
        # a module of the registry's package importing the runner, which imports it: a cycle
        ("evaluation/registry.py", "import decpo.evaluation.runner  # noqa", "no import cycles"),
    ],
)
def test_a_violation_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str):
    copy = tmp_path / "src" / "decpo"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}\n")
    done = _lint_imports(tmp_path / "src")
    assert done.returncode != 0
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout


def _sizes() -> tuple[list[str], list[str]]:
    long_modules, long_functions = [], []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES and (rel, None) not in EXCEPTIONS:
            long_modules.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (rel, node.name) not in EXCEPTIONS:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return long_modules, long_functions


def test_modules_and_functions_stay_small():
    long_modules, long_functions = _sizes()
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"

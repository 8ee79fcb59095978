"""The import-layer contracts of pyproject.toml hold, and they catch a planted upward import.

`lint-imports` reads packages from the file system under the root package's folder, while this
repository maps its top-level folders into `homework_monitor` (setuptools package-dir). So the check
runs on the tree as the wheel lays it out: the mapped folders copied under one `homework_monitor/`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def wheel_layout(dest: Path) -> Path:
    """Copy the Python sources of every mapped package into ``dest`` as the wheel lays them out."""
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        target = dest.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for src in (ROOT / folder).glob("*.py"):
            shutil.copy2(src, target / src.name)
    return dest


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(PYPROJECT), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def test_layers_hold(tmp_path):
    res = lint_imports(wheel_layout(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, planted, broken", [
    # core -> adapter (the Faust app)
    ("stream/windowing.py", "from homework_monitor.stream import app as _app  # noqa\n", "Layers"),
    # model -> training (an adapter)
    ("model.py", "from homework_monitor.training import data as _data  # noqa\n", "Layers"),
    # contract -> core
    ("contract.py", "from homework_monitor.stream import schemas as _s  # noqa\n", "Layers"),
    # store -> an adapter above it (the local stack)
    ("store/queries.py", "from homework_monitor.deploy import broker as _broker  # noqa\n", "Layers"),
    # core -> a Kafka client library
    ("stream/aggregation.py", "import kafka as _kafka  # noqa\n", "adapter libraries"),
])
def test_a_planted_upward_import_fails_the_check(tmp_path, module, planted, broken):
    tree = wheel_layout(tmp_path)
    path = tree / "homework_monitor" / module
    path.write_text(path.read_text() + "\n" + planted)
    res = lint_imports(tree)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and broken in res.stdout


def test_only_the_namespace_is_importable():
    """`import stream` (a PyPI name) must not resolve from an install: only `homework_monitor` does."""
    code = "import importlib.util as u; print([n for n in ('stream', 'training', 'deploy', 'producers') if u.find_spec(n)])"
    res = subprocess.run([sys.executable, "-P", "-c", code], cwd="/", capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_types_check_on_the_wheel_layout(tmp_path):
    """mypy (configured in pyproject.toml) over the package as installed, so cross-module types resolve."""
    tree = wheel_layout(tmp_path)
    pkg = tree / "homework_monitor"
    targets = [pkg / "contract.py", pkg / "model.py", pkg / "cli.py", pkg / "stream", pkg / "producers",
               pkg / "deploy", pkg / "store"]
    exe = Path(sys.executable).with_name("mypy")
    res = subprocess.run([str(exe), "--config-file", str(PYPROJECT), "--cache-dir", str(tmp_path / ".mypy"),
                          *map(str, targets)], cwd=tree, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]

"""This checkout importable as ``homework_monitor`` without installing it: prints a folder for PYTHONPATH.

The repository maps its top-level folders into one package (pyproject.toml, ``[tool.setuptools.package-dir]``:
``stream`` -> ``homework_monitor.stream``, ``deploy`` -> ``homework_monitor.deploy``, ...). An install does
that mapping; a machine without one (a GPU host that only received the checkout) and a second worktree
beside an editable install of another (whose finder would map ``homework_monitor.deploy`` to the other
tree) need it done by hand. This builds ``<dest>/homework_monitor`` of symbolic links into the checkout,
so the code, the model repository and its artifact are the checkout's own, not copies.

  PYTHONPATH=$(python3 benchmarks/source_layout.py /tmp/hwm-layout) python3 -P -c 'import homework_monitor.deploy'

Standard library only: it runs before anything of the project can be imported.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (NVIDIA's 24.x Triton containers): pip's vendored copy of tomli
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "homework_monitor"


def source_layout(dest: Path, root: Path = ROOT) -> Path:
    """``dest/homework_monitor`` linking the checkout's files as the wheel lays them out; returns ``dest``."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    package = Path(dest) / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    links = {package / src.name: src for src in (root / mapping[PACKAGE]).iterdir() if src.name != "__pycache__"}
    # Only the direct subpackages: deeper ones (store.migrations) are folders inside theirs.
    links |= {package / name.split(".")[1]: root / folder for name, folder in mapping.items()
              if name.count(".") == 1}
    for link, target in links.items():
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve(), target_is_directory=target.is_dir())
    return Path(dest)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DEST  (prints the folder to put on PYTHONPATH)")
    print(source_layout(Path(sys.argv[1]).resolve()))

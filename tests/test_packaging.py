"""What a wheel of grader holds: every package of the source tree is listed in pyproject.toml
(setuptools installs only the listed ones: a package left out works from a checkout and is
missing from an installed grader)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "grader").rglob("__init__.py")}
    found |= {"grader.reports.templates", "grader.templates"}  # data-only packages
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed <= found, f"listed but not in the tree: {sorted(listed - found)}"


def test_importing_any_module_runs_nothing() -> None:
    """Tools walk a package and import every module (pkgutil.walk_packages, as the peers'
    benchmark harness does): no module may start the CLI or a server when imported."""
    import subprocess
    import sys

    script = ("import importlib, pkgutil, sys; import grader\n"
              "sys.argv = ['harness', '--not-an-option']\n"
              "names = [m.name for m in pkgutil.walk_packages(grader.__path__, 'grader.')]\n"
              "for name in names:\n"
              "    importlib.import_module(name)\n"
              "print(len(names))")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert int(res.stdout.strip().splitlines()[-1]) > 50  # the walk really imported them


def test_every_data_file_in_the_tree_ships_in_the_wheel() -> None:
    """A data file beside the code (grader/data/*.toml, templates) is in the wheel only when a
    [tool.setuptools.package-data] glob of its package matches it."""
    import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]
    data = [p.relative_to(ROOT) for p in (ROOT / "grader").rglob("*") if p.is_file()
            and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert Path("grader/data/injection_patterns.toml") in data
    missing = [str(p) for p in data
               if not any(fnmatch.fnmatch(p.name, g)
                          for g in globs.get(".".join(p.parent.parts), []))]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"

"""The package's shape: one top-level ``hwsearch``, a public API chosen on purpose, and a wheel
that holds the app and the shipped profiles but not the tests."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

DATA_PACKAGES = ["hwsearch.targets.profiles"]  # folders of data files the wheel carries, no code
PACKAGES = [p for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
            if p not in DATA_PACKAGES]
# the public modules that are not packages: each declares its names too
MODULES = ["hwsearch.search.cli", "hwsearch.search.errors", "hwsearch.search.spec", "hwsearch.spaces.network"]


def test_every_public_module_is_listed():
    public = {"hwsearch." + ".".join(p.with_suffix("").relative_to(REPO).parts)
              for top in ("search", "spaces", "targets") for p in (REPO / top).rglob("*.py")
              if not any(part.startswith("_") for part in p.relative_to(REPO).parts)}
    assert public == set(MODULES)


def test_the_package_list_names_every_package_folder():
    folders = {"hwsearch." + ".".join(p.parent.relative_to(REPO).parts)
               for top in ("search", "spaces", "targets") for p in (REPO / top).rglob("__init__.py")}
    assert folders | {"hwsearch"} == set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES + MODULES)
def test_every_package_declares_its_public_names_and_they_resolve(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} says what it owns"
    assert isinstance(module.__all__, list) and module.__all__ == sorted(set(module.__all__), key=module.__all__.index)
    for public in module.__all__:
        assert getattr(module, public) is not None, f"{name}.{public}"


def _hwsearch_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hwsearch":
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "hwsearch":
                    yield node.lineno, a.name, []


def test_the_app_and_the_benchmarks_use_only_public_names():
    users = [REPO / "app.py", *sorted((REPO / "bench").glob("*.py")), *sorted((REPO / "examples").glob("*.py"))]
    bad = []
    for path in users:
        for line, module, names in _hwsearch_imports(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if any(part.startswith("_") for part in module.split(".")):
                bad.append(f"{where}: private module {module}")
                continue
            public = getattr(importlib.import_module(module), "__all__", [])
            package = hasattr(importlib.import_module(module), "__path__")
            bad += [f"{where}: {module}.{n} is not in its __all__" for n in names
                    if n not in public and not (package and importlib.util.find_spec(f"{module}.{n}"))]
    assert not bad, "\n".join(bad)


def test_the_errors_have_one_root_per_package_and_keep_their_builtin_bases():
    from hwsearch.search import SearchError, SpecError
    from hwsearch.search.engine import WorkerLost
    from hwsearch.search.outputs import ExportError
    from hwsearch.search.study import CorruptJournal, RunLocked, RunMismatch
    from hwsearch.search.training import DatasetError, TeacherError, TrialFailed
    from hwsearch.targets import HostTooNoisy, ProfileError, TargetError, UnpriceableError

    for error, builtin in [(SpecError, ValueError), (DatasetError, ValueError), (TeacherError, ValueError),
                           (ExportError, ValueError), (RunMismatch, ValueError), (RunLocked, RuntimeError),
                           (CorruptJournal, RuntimeError), (TrialFailed, RuntimeError), (WorkerLost, RuntimeError)]:
        assert issubclass(error, SearchError) and issubclass(error, builtin), error
    for error, builtin in [(ProfileError, ValueError), (UnpriceableError, LookupError), (HostTooNoisy, RuntimeError)]:
        assert issubclass(error, TargetError) and issubclass(error, builtin), error
    assert not issubclass(TargetError, SearchError) and not issubclass(SearchError, TargetError)


@pytest.mark.slow
def test_the_wheel_holds_one_package_with_the_app_and_the_profiles(tmp_path):
    # Build from a copy, so that build/ and *.egg-info never land in the checkout; without build
    # isolation, so that no network is needed (setuptools comes with the dev extra).
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info",
                                                             "__pycache__", "results"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("hwsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"hwsearch"}, tops  # no top-level search/, spaces/ or targets/ to clash with
    for needed in ("hwsearch/__init__.py", "hwsearch/app.py", "hwsearch/search/cli.py",
                   "hwsearch/targets/profiles/x86-epyc-1t.json", "hwsearch/search/engine/__init__.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("hwsearch/tests/", "hwsearch/bench/", "hwsearch/examples/"))]
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "hwsearch = hwsearch.search.cli:main" in entry


def test_the_app_is_a_resource_of_the_package():
    from importlib.resources import files

    app = files("hwsearch") / "app.py"
    assert app.is_file() and "st.set_page_config" in app.read_text()


# What each package must not import (the README's layout table), lazy imports inside functions included.
FORBIDDEN = {
    "spaces": ["hwsearch.targets", "hwsearch.search"],
    "targets": ["hwsearch.search", "torch"],
    "search/training": [f"hwsearch.search.{p}" for p in ("study", "algorithms", "engine", "outputs", "service")],
    "search/study": [f"hwsearch.search.{p}" for p in ("algorithms", "engine", "outputs", "service")] + ["torch"],
    "search/algorithms": [f"hwsearch.search.{p}" for p in ("engine", "outputs", "service")] + ["torch"],
    "search/engine": ["hwsearch.search.outputs", "hwsearch.search.service"],
    "search/outputs": ["hwsearch.search.engine", "hwsearch.search.service"],
    "search/service": ["hwsearch.search.engine", "hwsearch.search.training"],
}


def _all_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_package_imports_only_what_sits_above_it(folder):
    bad = [f"{path.relative_to(REPO)}:{line}: {module}"
           for path in sorted((REPO / folder).rglob("*.py")) for line, module in _all_imports(path)
           if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[folder])]
    assert not bad, "\n".join(bad)

"""The slug leaves out what the runtime never uses, and the runtime works without it.

chromadb declares ``kubernetes`` a hard dependency, tokenizers ``huggingface-hub``, dagster-webserver and
chromadb uvicorn's ``standard`` extras; pyproject.toml's ``[tool.uv] override-dependencies`` gives them a
marker that is never true, so the lock installs none of them.
``pytrec-eval-terrier`` (and with it scipy) is a dev dependency. The buildpack then runs bin/post_compile, which
removes from site-packages the test suites, tools and source maps the runtime never loads; the tests below run it
on a runtime environment and check that nothing left behind imports what it removed and that the runtime works.
benchmarks/slug_size.py builds the slug itself and runs tests/lean_runtime.py in it.
"""

from __future__ import annotations

import ast
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.lean_runtime import LEFT_OUT

REPO = Path(__file__).resolve().parents[1]
PROJECT = "docs-to-answer-pipeline"
UV = str(REPO / ".tools" / "bin" / "uv") if (REPO / ".tools" / "bin" / "uv").exists() else shutil.which("uv")
LEFT_OUT_DISTRIBUTIONS = {canonicalize_name(name) for name in (*LEFT_OUT, "huggingface-hub", "pytrec-eval-terrier")}
HOOK = REPO / "bin" / "post_compile"
# An import statement, including one split over lines in parentheses (a cheap filter before parsing).
IMPORT_STATEMENT = re.compile(r"\b(?:from\s+[.\w]+\s+)?import\s+(?:\([^)]*\)|[^\n]*)")


def runtime_packages_in_lock() -> set[str]:
    """Packages uv.lock installs for the project without its dev group, on this platform (Heroku's: Linux, x86-64)."""
    packages = {package["name"]: package for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    selected: set[str] = set()
    pending = [{"name": PROJECT}]
    while pending:
        dependency = pending.pop()
        if "marker" in dependency and not Marker(dependency["marker"]).evaluate():
            continue
        package = packages[dependency["name"]]
        extras = package.get("optional-dependencies", {})
        pending.extend(item for extra in dependency.get("extra", []) for item in extras[extra])
        if dependency["name"] not in selected:
            selected.add(dependency["name"])
            pending.extend(package.get("dependencies", []))
    return selected


def test_the_lock_selects_none_of_the_left_out_packages_for_the_runtime():
    runtime = runtime_packages_in_lock()
    assert {"chromadb", "onnxruntime", "tokenizers", "dagster", "bm25s", "uvicorn", "h11"} <= runtime
    assert runtime & LEFT_OUT_DISTRIBUTIONS == set()
    # The lock still knows them: kubernetes through chromadb (never selected), pytrec-eval-terrier in dev.
    assert {"kubernetes", "pytrec-eval-terrier", "scipy"} <= {
        package["name"] for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]
    }


def runtime_environment(directory: Path) -> Path:
    """``uv sync --locked --no-default-groups`` from the committed lock into ``directory/.venv``, without the
    project itself (the tests import it from the repository) and without bytecode; returns its site-packages."""
    for name in ("pyproject.toml", "uv.lock", ".python-version"):
        shutil.copy(REPO / name, directory / name)
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "hardlink", "VIRTUAL_ENV": ""}
    # --offline: the wheels are in uv's cache from installing this environment (a superset).
    subprocess.run(
        [UV, "sync", "--locked", "--no-default-groups", "--no-install-project", "--offline", "--quiet"],
        cwd=directory,
        env=environment,
        check=True,
    )
    return next((directory / ".venv" / "lib").glob("python*/site-packages"))


def test_a_runtime_install_from_the_committed_lock_installs_none_of_them(tmp_path):
    site_packages = runtime_environment(tmp_path)
    installed = {canonicalize_name(info.name.split("-")[0]) for info in site_packages.glob("*.dist-info")}
    assert {"chromadb", "onnxruntime", "tokenizers", "dagster", "bm25s"} <= installed
    assert installed & LEFT_OUT_DISTRIBUTIONS == set()
    assert installed == runtime_packages_in_lock() - {PROJECT}


def test_chroma_embedding_bm25_metrics_and_definitions_work_with_the_left_out_packages_unimportable():
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "tests" / "import_blocker"), os.environ.get("PYTHONPATH")])
        ),
        "BLOCKED_IMPORTS": ",".join(LEFT_OUT),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tests.lean_runtime"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["persistent_client"][0] == results["http_client"][0] == "create-table"
    assert results["importable_left_out"] == results["imported_left_out"] == []
    assert results["asset_count"] > 0


def test_the_import_blocker_blocks():
    environment = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "import_blocker"), "BLOCKED_IMPORTS": "json"}
    completed = subprocess.run(
        [sys.executable, "-c", "import json"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 1 and "blocked by BLOCKED_IMPORTS" in completed.stderr


def run_post_compile(environment: Path) -> subprocess.CompletedProcess[str]:
    """bin/post_compile as the buildpack runs it: from the app directory, the environment's python first on PATH."""
    return subprocess.run(
        [str(HOOK)],
        cwd=REPO,
        env={**os.environ, "PATH": f"{environment / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def files_in(directory: Path) -> set[str]:
    return {path.relative_to(directory).as_posix() for path in directory.rglob("*") if not path.is_dir()}


def module_name(path: str) -> str | None:
    """``numpy/_core/tests/__init__.py`` is ``numpy._core.tests``; None for a file that is not a module."""
    *packages, name = path.split("/")
    suffix = next(
        (
            end
            for end in (*importlib.machinery.SOURCE_SUFFIXES, *importlib.machinery.EXTENSION_SUFFIXES)
            if name.endswith(end)
        ),
        None,
    )
    if suffix is None:
        return None
    stem = name.removesuffix(suffix)
    return ".".join(packages if stem == "__init__" else [*packages, stem])


def imported_names(path: str, source: str) -> Iterator[str]:
    """What the import statements anywhere in the module at ``path`` (in functions too) may load:
    ``from a import b`` loads ``a`` and, if it is a module, ``a.b``; relative imports resolved."""
    module = module_name(path) or ""
    package = module.split(".") if path.endswith("/__init__.py") else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*anchor, *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def imports_of_removed_modules(site_packages: Path, kept: set[str], removed: set[str]) -> set[tuple[str, str]]:
    """(kept file, removed module) for every import statement left in site-packages that names a removed module."""
    removed_modules = {name for name in map(module_name, removed) if name}
    # An import of anything under a removed directory (numpy/_core/tests, onnxruntime/tools) names that directory,
    # so only files with an import statement naming one are parsed (parsing all of them takes seconds).
    tops = set()
    for path in map(Path, removed):
        while not (site_packages / path.parent).exists():
            path = path.parent
        tops.add(path.name.split(".")[0])
    naming_a_top = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, tops))) + r")\b")
    found = set()
    for path in sorted(kept):
        if not path.endswith(".py"):
            continue
        source = (site_packages / path).read_text(errors="replace")
        if not any(naming_a_top.search(statement) for statement in IMPORT_STATEMENT.findall(source)):
            continue
        for name in imported_names(path, source):
            parts = name.split(".")
            # The most specific removed module it names (a.b.c names a.b and a too).
            prefixes = (".".join(parts[:end]) for end in range(len(parts), 0, -1))
            removed_module = next((prefix for prefix in prefixes if prefix in removed_modules), None)
            if removed_module:
                found.add((path, removed_module))
    return found


def test_post_compile_removes_only_what_the_runtime_never_loads(tmp_path):
    site_packages = runtime_environment(tmp_path)
    before = files_in(site_packages)
    completed = run_post_compile(tmp_path / ".venv")
    assert completed.returncode == 0, completed.stderr
    kept = files_in(site_packages)
    removed = before - kept

    # What it is for: numpy's test suite, ONNX Runtime's C API library (35 MB) and tools, the UI's source maps.
    assert any(path.startswith("numpy/_core/tests/") for path in removed)
    assert any(path.startswith("onnxruntime/capi/libonnxruntime.so.") for path in removed)
    assert {"tools", "transformers", "quantization"} <= {
        path.split("/")[1] for path in removed if path.startswith("onnxruntime/")
    }
    # Of the UI's files only the source maps go: everything the browser loads is still served.
    webapp = {path for path in before if path.startswith("dagster_webserver/webapp/")}
    assert webapp & removed == {path for path in webapp if path.endswith(".map")} != set()
    # GraphiQL's page loads its scripts from webapp/build/vendor/graphiql, not the copy removed.
    graphiql_page = (site_packages / "dagster_webserver" / "templates" / "graphiql.py").read_text()
    assets = set(re.findall(r"/vendor/graphiql/[\w.-]+", graphiql_page))
    assert assets and all(f"dagster_webserver/webapp/build{asset}" in kept for asset in assets)
    # Every package is still there, with its metadata (uv reads it to keep a cached build's packages).
    assert {path.split("/")[0] for path in kept} == {path.split("/")[0] for path in before}
    assert not any(".dist-info/" in path for path in removed)

    # Nothing left imports what was removed, in any function, except a diagnostic the runtime never calls:
    # onnxruntime.print_debug_info() imports its transformers tools only in a CUDA build with psutil,
    # py-cpuinfo and py3nvml installed, none of which the lock installs.
    assert imports_of_removed_modules(site_packages, kept, removed) == {
        ("onnxruntime/__init__.py", "onnxruntime.transformers.machine_info")
    }
    assert runtime_packages_in_lock() & {"psutil", "py-cpuinfo", "py3nvml"} == set()

    # And the runtime works in what is left.
    runtime = subprocess.run(
        [str(tmp_path / ".venv" / "bin" / "python"), "-m", "tests.lean_runtime"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert runtime.returncode == 0, runtime.stderr[-3000:]

    # A build from cache keeps the pruned packages and runs the hook again: it succeeds and finds nothing more.
    before_again = files_in(site_packages)
    again = run_post_compile(tmp_path / ".venv")
    assert again.returncode == 0, again.stderr
    assert files_in(site_packages) == before_again


def test_post_compile_stops_the_build_when_python_is_not_the_apps(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "other")], check=True, timeout=60)
    completed = run_post_compile(tmp_path / "other")
    assert completed.returncode == 1
    assert "not the app's site-packages" in completed.stderr


def test_post_compile_is_an_executable_bash_script():
    # The buildpack makes it executable itself; benchmarks/slug_size.py and a developer run it as git checks it out.
    staged = subprocess.run(
        ["git", "ls-files", "--stage", "bin/post_compile"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert staged.stdout.startswith("100755 ")
    assert subprocess.run(["bash", "-n", str(HOOK)], capture_output=True, timeout=30).returncode == 0

"""The slug leaves out what the runtime never uses, and the runtime works without it.

chromadb declares ``kubernetes`` a hard dependency, tokenizers ``huggingface-hub``, dagster-webserver and
chromadb uvicorn's ``standard`` extras; pyproject.toml's ``[tool.uv] override-dependencies`` gives them a
marker that is never true, so the lock installs none of them.
``pytrec-eval-terrier`` (and with it scipy) is a dev dependency. benchmarks/slug_size.py builds the slug
itself and runs tests/lean_runtime.py in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.lean_runtime import LEFT_OUT

REPO = Path(__file__).resolve().parents[1]
PROJECT = "docs-to-answer-pipeline"
UV = str(REPO / ".tools" / "bin" / "uv") if (REPO / ".tools" / "bin" / "uv").exists() else shutil.which("uv")
LEFT_OUT_DISTRIBUTIONS = {canonicalize_name(name) for name in (*LEFT_OUT, "huggingface-hub", "pytrec-eval-terrier")}


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


def test_a_runtime_install_from_the_committed_lock_installs_none_of_them(tmp_path):
    for name in ("pyproject.toml", "uv.lock", ".python-version"):
        shutil.copy(REPO / name, tmp_path / name)
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "hardlink", "VIRTUAL_ENV": ""}
    # --offline: the wheels are in uv's cache from installing this environment (a superset).
    subprocess.run(
        [UV, "sync", "--locked", "--no-default-groups", "--no-install-project", "--offline", "--quiet"],
        cwd=tmp_path,
        env=environment,
        check=True,
    )
    site_packages = next((tmp_path / ".venv" / "lib").glob("python*/site-packages"))
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

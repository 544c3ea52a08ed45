"""The local stand-ins (``pipeline/local``) and the product stay apart, read from the source's imports.

Only the CLI and its wiring of them (pipeline/stand_ins.py) put them together; the stand-ins take what they
need from the pipeline as arguments, so they import nothing but the endpoint's contract and pure helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline

PACKAGE = Path(pipeline.__file__).parent
STAND_INS = PACKAGE / "local"
# The entry point and the wiring that may import both product and stand-ins.
WIRING = {PACKAGE / "cli.py", PACKAGE / "stand_ins.py"}
# What a stand-in may import from the pipeline: itself, the endpoint's contract and pure helpers.
STAND_IN_MAY_IMPORT = (
    "pipeline.local",
    "pipeline.rerank.contract",
    "pipeline.answer.contract",
    "pipeline.answer.protocol",
    "pipeline.embedding",
    "pipeline.credentials",
    "pipeline.settings",
)


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Every module ``path`` (under ``root``) imports, at the top or inside functions.

    ``from a import b`` counts a and a.b."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_stand_ins_are_in_pipeline_local():
    modules = {path.stem for path in STAND_INS.glob("*.py")}
    assert {"rerank_service", "faults", "scoring", "known_vectors"} <= modules
    assert not any((PACKAGE / "rerank" / name).exists() for name in ("service.py", "scoring.py", "known_vectors.py"))


def test_only_the_cli_and_its_wiring_import_the_stand_ins():
    product = [path for path in PACKAGE.rglob("*.py") if STAND_INS not in path.parents and path not in WIRING]
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            name for name in imported_modules(path) if within(name, "pipeline.local")
        )
        for path in product
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_stand_ins_import_nothing_from_the_pipelines_stages():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            name
            for name in imported_modules(path)
            if within(name, "pipeline") and not any(within(name, allowed) for allowed in STAND_IN_MAY_IMPORT)
        )
        for path in STAND_INS.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_import_reader_sees_every_form(tmp_path):
    # The two checks above are only as good as this reader: absolute, from-, relative and function-level imports.
    package = tmp_path / "pipeline"
    (package / "local").mkdir(parents=True)
    source = package / "local" / "sample.py"
    source.write_text(
        "import pipeline.store.state\n"
        "from pipeline import chunking\n"
        "from ..ingest import sync_vectors\n"
        "def later():\n"
        "    from .scoring import text_key\n",
        encoding="utf-8",
    )
    assert imported_modules(source, root=tmp_path) >= {
        "pipeline.store.state",
        "pipeline.chunking",
        "pipeline.ingest.sync_vectors",
        "pipeline.local.scoring.text_key",
    }

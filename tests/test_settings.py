import subprocess
import sys
from pathlib import Path

from pipeline import settings

CONFIGURATION_DOC = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented_in_the_configuration_reference():
    missing = [name for name in settings.SETTINGS if f"`{name}`" not in CONFIGURATION_DOC]
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_values_fall_back_to_defaults(monkeypatch):
    monkeypatch.delenv("RERANK_MODEL_ID", raising=False)
    assert settings.value("RERANK_MODEL_ID") == "cohere-rerank-3-5"
    assert not settings.is_set("RERANK_MODEL_ID")
    monkeypatch.setenv("RERANK_MODEL_ID", "amazon-rerank-1-0")
    assert settings.value("RERANK_MODEL_ID") == "amazon-rerank-1-0"
    assert settings.is_set("RERANK_MODEL_ID")
    monkeypatch.setenv("RERANK_MODEL_ID", "")
    assert settings.value("RERANK_MODEL_ID") == "cohere-rerank-3-5"


def test_unknown_settings_are_refused():
    try:
        settings.value("NOT_A_SETTING")
    except KeyError as error:
        assert "pipeline/settings.py" in str(error)
    else:
        raise AssertionError("expected KeyError")


def _pipeline_modules_loaded_by(module: str) -> list[str]:
    code = f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules if m.startswith('pipeline'))))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return [name for name in loaded if name not in ("pipeline", module)]


def test_settings_is_a_leaf_that_imports_nothing_of_the_pipeline():
    assert _pipeline_modules_loaded_by("pipeline.settings") == []


def test_run_tags_and_the_instance_configuration_load_without_the_dagster_definitions():
    for module in ("pipeline.run_tags", "pipeline.instance"):
        assert not [name for name in _pipeline_modules_loaded_by(module) if name.startswith("pipeline.defs")], module


def test_file_defaults_are_the_bundled_demo_files(monkeypatch):
    names = ("PIPELINE_SOURCES", "PIPELINE_QUERIES", "PIPELINE_LABELLED_QUERIES", "PIPELINE_UNANSWERABLE_QUERIES")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    from pipeline.demo import LABELLED_QUERIES_FILE, QUERIES_FILE, SOURCES_FILE, UNANSWERABLE_QUERIES_FILE

    files = (SOURCES_FILE, QUERIES_FILE, LABELLED_QUERIES_FILE, UNANSWERABLE_QUERIES_FILE)
    assert [settings.value(name) for name in names] == [str(path) for path in files]
    assert all(path.is_file() for path in files)

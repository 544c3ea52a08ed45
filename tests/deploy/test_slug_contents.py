"""What the Heroku Python buildpack installs from: one lock file, .python-version, pinned Dagster, lean runtime."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK_FILES = ("requirements.txt", "poetry.lock", "Pipfile.lock", "uv.lock")
TEST_ONLY = {"pytest", "pytest-timeout", "selenium", "honcho", "matplotlib", "trustme", "ruff", "mypy"}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _locked_versions() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {package["name"]: package.get("version", "") for package in lock["package"]}


def test_exactly_one_lock_file_and_a_python_version_the_buildpack_reads():
    assert [name for name in LOCK_FILES if (REPO / name).exists()] == ["uv.lock"]
    assert (REPO / ".python-version").read_text().strip().startswith("3.11")
    assert not (REPO / "runtime.txt").exists()


def test_test_tools_stay_in_the_dev_group_out_of_the_runtime():
    project = _project()
    runtime = {requirement.split("==")[0].split("[")[0] for requirement in project["project"]["dependencies"]}
    dev = {requirement.split("==")[0] for requirement in project["dependency-groups"]["dev"]}
    assert TEST_ONLY <= dev
    assert not runtime & TEST_ONLY
    assert "torch" not in _locked_versions()


def test_dagster_packages_are_pinned_to_one_release():
    versions = _locked_versions()
    # dg (dev group) and what it brings are released with dagster too.
    release = (
        *("dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes", "dagster-shared"),
        *("dagster-dg-cli", "dagster-dg-core"),
    )
    core = {versions[name] for name in release}
    assert len(core) == 1
    major, minor, patch = next(iter(core)).split(".")
    # Dagster's libraries are versioned 0.(minor + 16).patch alongside 1.minor.patch.
    assert versions["dagster-postgres"] == f"0.{int(minor) + 16}.{patch}"
    project = _project()
    for requirement in project["project"]["dependencies"] + project["dependency-groups"]["dev"]:
        if requirement.startswith("dagster"):
            assert "==" in requirement, requirement


def test_every_loader_names_the_same_definitions_module_and_code_location():
    """workspace.yaml (the Heroku web and worker processes), [tool.dagster] (`dagster dev`) and [tool.dg] (`dg`)."""
    import yaml

    [entry] = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    workspace = (entry["python_module"]["module_name"], entry["python_module"]["location_name"])
    tools = _project()["tool"]
    dg_project = tools["dg"]["project"]
    assert tools["dg"]["directory_type"] == "project" and dg_project["root_module"] == "pipeline"
    assert workspace == ("pipeline.definitions", "pipeline")
    assert (tools["dagster"]["module_name"], tools["dagster"]["code_location_name"]) == workspace
    assert (dg_project["code_location_target_module"], dg_project["code_location_name"]) == workspace

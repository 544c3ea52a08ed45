"""app.json and Procfile as Heroku reads them: schema fields, process types, add-ons, sizes, example inputs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import jsonschema
import pytest

from pipeline.crawl.sources import load_sources
from pipeline.embedding.contract import KNOWN_MODELS as EMBEDDING_MODELS
from pipeline.queries import load_queries
from pipeline.rerank.contract import KNOWN_MODELS as RERANK_MODELS

ROOT = Path(__file__).resolve().parents[2]
APP_JSON = json.loads((ROOT / "app.json").read_text())

# The fields Heroku documents for app.json (https://devcenter.heroku.com/articles/app-json-schema);
# additionalProperties: false so a misspelt key fails here instead of being ignored on deploy.
_ENV_VAR = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {
                "description": {"type": "string"},
                "value": {"type": "string"},
                "required": {"type": "boolean"},
                "generator": {"enum": ["secret"]},
            },
            "additionalProperties": False,
        },
    ]
}
_ADDON = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"plan": {"type": "string"}, "as": {"type": "string"}, "options": {"type": "object"}},
            "required": ["plan"],
            "additionalProperties": False,
        },
    ]
}
APP_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "description": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "repository": {"type": "string", "format": "uri"},
        "website": {"type": "string"},
        "logo": {"type": "string"},
        "success_url": {"type": "string"},
        "buildpacks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"url": {"type": "string"}},
                "required": ["url"],
                "additionalProperties": False,
            },
        },
        "formation": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"quantity": {"type": "integer", "minimum": 0}, "size": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "addons": {"type": "array", "items": _ADDON},
        "env": {"type": "object", "additionalProperties": _ENV_VAR},
        "scripts": {"type": "object", "additionalProperties": {"type": "string"}},
        "stack": {"type": "string"},
        "environments": {"type": "object"},
    },
    "required": ["name", "description", "repository", "buildpacks", "formation", "addons", "env"],
    "additionalProperties": False,
}
# Heroku dyno sizes by tier; an app cannot mix Eco/Basic dynos with Standard/Performance ones.
DYNO_TIERS = {
    "eco": "eco",
    "basic": "basic",
    "standard-1x": "professional",
    "standard-2x": "professional",
    "performance-m": "professional",
    "performance-l": "professional",
    "performance-l-ram": "professional",
    "performance-xl": "professional",
    "performance-2xl": "professional",
}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = [line.split(":", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {name.strip(): command.strip() for name, command in entries}


def test_app_json_matches_the_documented_schema() -> None:
    jsonschema.validate(APP_JSON, APP_JSON_SCHEMA)


def test_schema_rejects_an_undocumented_field() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**APP_JSON, "formations": APP_JSON["formation"]}, APP_JSON_SCHEMA)


def test_procfile_runs_the_installed_pipeline_executable_for_each_process() -> None:
    assert procfile() == {"release": "pipeline release", "web": "pipeline web", "worker": "pipeline worker"}
    # Procfile commands call the executable the buildpack installs on PATH, not python -m.
    assert shutil.which("pipeline", path=str(Path(sys.executable).parent))


def test_formation_process_types_exist_in_the_procfile() -> None:
    assert set(APP_JSON["formation"]) == {"web", "worker"}
    assert set(APP_JSON["formation"]) <= set(procfile())


def test_dyno_sizes_are_valid_and_from_one_tier_family() -> None:
    sizes = [process["size"].lower() for process in APP_JSON["formation"].values()]
    assert all(size in DYNO_TIERS for size in sizes), sizes
    assert len({DYNO_TIERS[size] for size in sizes}) == 1, sizes


def test_addons_attach_postgres_and_inference_rerank_as_RERANK_and_embeddings_as_EMBEDDING() -> None:
    addons = [addon if isinstance(addon, dict) else {"plan": addon} for addon in APP_JSON["addons"]]
    assert any(addon["plan"].startswith("heroku-postgresql:") for addon in addons)
    inference = {addon.get("as"): addon["plan"] for addon in addons if addon["plan"].startswith("heroku-inference:")}
    # Attached as RERANK and EMBEDDING, they set RERANK_* and EMBEDDING_* (URL, KEY, MODEL_ID).
    assert inference.keys() == {"RERANK", "EMBEDDING"}
    assert inference["RERANK"].removeprefix("heroku-inference:") in RERANK_MODELS
    assert inference["EMBEDDING"].removeprefix("heroku-inference:") in EMBEDDING_MODELS


def test_web_password_is_a_generated_secret() -> None:
    password = APP_JSON["env"]["WEB_PASSWORD"]
    assert password["generator"] == "secret"
    assert "value" not in password


def test_example_sources_and_queries_exist_and_load() -> None:
    sources = APP_JSON["env"]["PIPELINE_SOURCES"]["value"]
    queries = APP_JSON["env"]["PIPELINE_QUERIES"]["value"]
    assert (ROOT / sources).is_file() and (ROOT / queries).is_file()
    assert load_sources(ROOT / sources)
    assert load_queries(ROOT / queries)


def test_the_app_names_a_supported_stack() -> None:
    """Named, a new app does not land on whatever Heroku's default stack becomes; heroku-22 and heroku-24
    are the stacks Heroku supports (https://devcenter.heroku.com/articles/stack)."""
    assert APP_JSON["stack"] in {"heroku-22", "heroku-24"}


@pytest.mark.parametrize("document", ["README.md", "docs/deploy.md"])
def test_the_deploy_button_names_the_template_it_deploys(document: str) -> None:
    """Without ``?template=`` the button works only when clicked on the repository's own GitHub page."""
    buttons = re.findall(r"\]\((https://www\.heroku\.com/deploy[^)]*)\)", (ROOT / document).read_text())
    assert buttons == [f"https://www.heroku.com/deploy?template={APP_JSON['repository']}"]

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

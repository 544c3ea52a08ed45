"""Numeric settings are parsed once, with errors that name the variable."""

import pytest

from pipeline import settings
from pipeline.settings import SettingError


def test_string_is_the_value_or_the_default_and_names_a_missing_variable(monkeypatch):
    monkeypatch.delenv("CHROMA_SSL", raising=False)
    assert settings.string("CHROMA_SSL") == "false"
    monkeypatch.setenv("CHROMA_SSL", "true")
    assert settings.string("CHROMA_SSL") == "true"
    monkeypatch.delenv("CHROMA_HOST", raising=False)
    with pytest.raises(SettingError, match="^CHROMA_HOST is not set$"):
        settings.string("CHROMA_HOST")


def test_defaults_parse():
    assert settings.integer("PIPELINE_RERANK_UNITS_BUDGET", minimum=0) == 1000
    assert settings.number("PIPELINE_MIN_TEXT_SHARE", minimum=0, maximum=1) == 0.9
    assert settings.number("PIPELINE_FRESHNESS_MAX_AGE_HOURS", minimum=0.01) == 26


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("PIPELINE_RERANK_UNITS_BUDGET", "lots", "PIPELINE_RERANK_UNITS_BUDGET must be a whole number, got 'lots'"),
        ("PIPELINE_RERANK_UNITS_BUDGET", "-5", "PIPELINE_RERANK_UNITS_BUDGET must be at least 0, got '-5'"),
        ("PIPELINE_MIN_TEXT_SHARE", "90%", "PIPELINE_MIN_TEXT_SHARE must be a number, got '90%'"),
        ("PIPELINE_MIN_TEXT_SHARE", "1.5", "PIPELINE_MIN_TEXT_SHARE must be between 0 and 1, got '1.5'"),
        ("PIPELINE_MIN_TEXT_SHARE", "nan", "PIPELINE_MIN_TEXT_SHARE must be between 0 and 1, got 'nan'"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, raw, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingError) as raised:
        if name == "PIPELINE_RERANK_UNITS_BUDGET":
            settings.integer(name, minimum=0)
        else:
            settings.number(name, minimum=0, maximum=1)
    assert str(raised.value) == message

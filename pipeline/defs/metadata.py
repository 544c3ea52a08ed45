"""Turning plain report metadata into Dagster metadata values."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipeline.checks import Markdown


def ui_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tables render as Markdown in the UI; numbers, flags and short texts stay as they are."""
    return {key: dg.MetadataValue.md(value) if isinstance(value, Markdown) else value for key, value in values.items()}

"""Asset check results from the plain reports of ``pipeline/check_reports.py``."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipeline.tables import Markdown


def ui_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tables render as Markdown in the UI; numbers, flags and short texts stay as they are."""
    return {key: dg.MetadataValue.md(value) if isinstance(value, Markdown) else value for key, value in values.items()}


def must_act_result(passed: bool, metadata: Mapping[str, Any], *, problem: str) -> dg.AssetCheckResult:
    """An ERROR-severity result (red in the UI when failed) whose description says what to look at."""
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=ui_metadata(metadata),
        description=None if passed else problem,
    )

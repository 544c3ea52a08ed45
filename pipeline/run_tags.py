"""Run tags the jobs set and the instance limits on.

Plain constants, so ``pipeline.instance`` needs no Dagster definitions.

Runs carry ``pipeline/writes`` (``index`` or ``context_sets``): what part of the pipeline
state they rewrite, for the instance's ``tag_concurrency_limits`` (docs/operations.md, "Overlapping runs").
"""

WRITES_TAG = "pipeline/writes"
WRITES_INDEX = {WRITES_TAG: "index"}
WRITES_CONTEXT_SETS = {WRITES_TAG: "context_sets"}

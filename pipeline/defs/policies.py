"""Step retries and the automation conditions.

Queries are read once on a fresh deployment; context sets keep in step with the index."""

import dagster as dg

# Every stage is idempotent (it reconciles its table with the one upstream, and the rerank
# cache bills nothing twice), so retrying a step only repeats what did not finish. The crawler
# and the rerank client already retry single requests; this covers what fails a whole step
# for a moment: a dropped database connection, a Chroma server restart, a 503 from the
# queries URL. Waits are 5, 15 and 35 seconds. Failures that would recur raise
# ``dg.Failure(allow_retries=False)`` and are not retried.
STEP_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)

# Retrieval, rerank and context sets follow the index: once any upstream asset was updated
# (a source refreshed, a new source ingested, a failed source re-executed), and nothing
# upstream is queued or running any more, they run once. The daily refresh queues every
# source at the same tick, so they wait for the last one and run once, not once per source;
# runs that already materialise them (build_context_sets) do not trigger them again.
# The queries do not count as an update: queries_file_sensor launches build_context_sets for a
# changed file, and on a fresh deployment the queries are read before anything is indexed,
# when retrieval would only publish empty context sets.
AFTER_UPSTREAM_SETTLES = (
    dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.assets("queries")).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after index updates settle")

# A fresh deployment reads the queries file once by itself, so the first context sets do not
# wait for a change to the file (queries_file_sensor follows changes after that). A read that
# failed is not requested again every tick: the step's retries already ran, and the error wants
# a fix, then a materialisation or a change to the file.
ONCE_WHEN_MISSING = (
    dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.execution_failed()
).with_label("once when never materialised")

"""Every environment variable the product reads, with its offline default.

This is the one module that reads ``os.environ``. Dagster resources receive paths
as ``dagster.EnvVar`` and endpoints and credentials as resource dependencies that run
config cannot replace (see ``pipeline/defs/resources.py``), so secret values never show
in the Dagster UI; plain entry points (the CLI, the Heroku web process, instance
configuration) call :func:`value`, or :func:`string`, :func:`number` and :func:`integer`
where a value is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The offline defaults are the bundled demo's files. Named by path rather than imported from
# pipeline.demo so that this module stays a leaf: everything may import it, it imports nothing
# of the pipeline (tests/test_settings.py checks both).
_DEMO_DIR = Path(__file__).parent / "demo"


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str
    secret: bool = False


_SETTINGS = [
    Setting(
        "PIPELINE_DATA_DIR",
        "./data",
        "Directory for the local Chroma store, SQLite state and ranked_context_sets.jsonl.",
    ),
    Setting(
        "PIPELINE_SOURCES", str(_DEMO_DIR / "sources.yaml"), "YAML file listing the documentation sources to crawl."
    ),
    Setting("PIPELINE_QUERIES", str(_DEMO_DIR / "queries.yaml"), "YAML or JSONL file of queries, each {id, query}."),
    Setting(
        "PIPELINE_LABELLED_QUERIES",
        str(_DEMO_DIR / "labelled_queries.yaml"),
        "YAML file of labelled queries (id, query, relevant pages with grades) for the retrieval_evaluation asset.",
    ),
    Setting(
        "PIPELINE_UNANSWERABLE_QUERIES",
        str(_DEMO_DIR / "unanswerable_queries.yaml"),
        "YAML file of questions the labelled set's corpus does not answer (id, query), for the answer_evaluation "
        "asset's abstention rate.",
    ),
    Setting("PIPELINE_REFRESH_CRON", "0 4 * * *", "Cron expression of the daily knowledge-base refresh schedule."),
    Setting("PIPELINE_REFRESH_TIMEZONE", "UTC", "IANA time zone the refresh cron is read in (e.g. Europe/Berlin)."),
    Setting(
        "PIPELINE_FRESHNESS_MAX_AGE_HOURS", "26", "Hours after which a source's last successful refresh is overdue."
    ),
    Setting("PIPELINE_RERANK_UNITS_BUDGET", "1000", "Rerank search units one run may bill before its check fails."),
    Setting(
        "PIPELINE_ANSWER_TOKENS_BUDGET",
        "200000",
        "Chat tokens (prompt and completion) one answers run may spend before its check warns.",
    ),
    Setting("PIPELINE_MIN_TEXT_SHARE", "0.9", "Share of a source's fetched pages that must yield text (0-1)."),
    Setting(
        "PIPELINE_TEMPORARY_REDIRECT_DAYS",
        "7",
        "Days a stored page may answer a temporary redirect (302, 303, 307) before it is treated as moved.",
    ),
    Setting(
        "PIPELINE_VECTOR_RETENTION_DAYS",
        "14",
        "Days vectors no chunk uses are kept, so text that comes back is not embedded again, and days an "
        "embedding model no longer configured keeps its vectors.",
    ),
    Setting(
        "PIPELINE_SOURCE_REMOVAL_GRACE_HOURS",
        "72",
        "Hours a source dropped from the sources file keeps its pages, chunks and vectors before they are purged.",
    ),
    Setting("RERANK_URL", "http://127.0.0.1:8765", "Base URL of the rerank service; POST {RERANK_URL}/v1/rerank."),
    Setting("RERANK_KEY", "local-dev-key", "Bearer token for the rerank service (Heroku Inference key).", secret=True),
    Setting("RERANK_MODEL_ID", "cohere-rerank-3-5", "Rerank model: cohere-rerank-3-5 or amazon-rerank-1-0."),
    Setting(
        "EMBEDDING_URL",
        None,
        "Base URL of the embeddings service; POST {EMBEDDING_URL}/v1/embeddings. With EMBEDDING_KEY and "
        "EMBEDDING_MODEL_ID, chunks and queries are embedded there; unset, by the local all-MiniLM-L6-v2 model.",
    ),
    Setting("EMBEDDING_KEY", None, "Bearer token for the embeddings service (Heroku Inference key).", secret=True),
    Setting("EMBEDDING_MODEL_ID", None, "Embedding model of the embeddings service, e.g. cohere-embed-multilingual."),
    Setting(
        "INFERENCE_URL",
        None,
        "Base URL of the chat model attached --as INFERENCE; POST {INFERENCE_URL}/v1/chat/completions. With "
        "INFERENCE_KEY and INFERENCE_MODEL_ID, questions are answered there; unset, by the local extractive answerer.",
    ),
    Setting("INFERENCE_KEY", None, "Bearer token for the chat model (Heroku Inference key).", secret=True),
    Setting("INFERENCE_MODEL_ID", None, "Chat model of the chat endpoint, e.g. claude-4-5-haiku."),
    Setting("CHROMA_HOST", None, "Chroma server host; when set, an HttpClient replaces the local PersistentClient."),
    Setting("CHROMA_PORT", "8000", "Chroma server port (with CHROMA_HOST)."),
    Setting("CHROMA_SSL", "false", "Use HTTPS to reach the Chroma server (with CHROMA_HOST)."),
    Setting("CHROMA_TOKEN", None, "Token sent as x-chroma-token to the Chroma server or Chroma Cloud.", secret=True),
    Setting("CHROMA_TENANT", None, "Chroma tenant (Chroma Cloud)."),
    Setting("CHROMA_DATABASE", None, "Chroma database (Chroma Cloud)."),
    Setting(
        "DAGSTER_HOME",
        None,
        "Dagster instance directory; the pipeline writes its dagster.yaml there. "
        "<PIPELINE_DATA_DIR>/dagster_home when unset.",
    ),
    Setting("PIPELINE_MAX_CONCURRENT_RUNS", "1", "Runs the queued run coordinator lets execute at once."),
    Setting("WEB_USERNAME", "admin", "User name for the web process's HTTP basic authentication."),
    Setting("WEB_PASSWORD", None, "Password for the Dagster UI (web process); required on Heroku.", secret=True),
    Setting("PORT", "3000", "Port the web process listens on (Heroku sets it on web dynos only)."),
    Setting("DYNO", None, "Set by Heroku on every dyno (e.g. web.1); the web process then requires WEB_PASSWORD."),
    Setting(
        "DATABASE_URL",
        None,
        "PostgreSQL URL for durable state; postgres:// is accepted. SQLite in the data directory when unset.",
        secret=True,
    ),
]
SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _SETTINGS}


def is_set(name: str) -> bool:
    """True when the variable is present and non-empty in the environment."""
    _known(name)
    return bool(os.environ.get(name))


def value(name: str) -> str | None:
    """The variable's value, or its default when unset or empty."""
    setting = _known(name)
    return os.environ.get(name) or setting.default


class SettingError(ValueError):
    """A variable holds a value the pipeline cannot use; the message names the variable."""


def string(name: str) -> str:
    """The variable (or its default) where a value is needed: a setting with a default, or one checked with
    :func:`is_set` first. Unset and without a default, it is a :class:`SettingError`."""
    text = value(name)
    if text is None:
        raise SettingError(f"{name} is not set")
    return text


def number(name: str, *, minimum: float, maximum: float | None = None) -> float:
    """The variable (or its default) as a number within [minimum, maximum]."""
    text = string(name)
    try:
        parsed = float(text)
    except ValueError:
        raise SettingError(f"{name} must be a number, got {text!r}") from None
    if not minimum <= parsed <= (maximum if maximum is not None else float("inf")):
        bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise SettingError(f"{name} must be {bounds}, got {text!r}")
    return parsed


def integer(name: str, *, minimum: int) -> int:
    """The variable (or its default) as a whole number of at least ``minimum``."""
    text = string(name)
    try:
        parsed = int(text)
    except ValueError:
        raise SettingError(f"{name} must be a whole number, got {text!r}") from None
    if parsed < minimum:
        raise SettingError(f"{name} must be at least {minimum}, got {text!r}")
    return parsed


def all_or_none(*names: str) -> bool:
    """True when every one of ``names`` is set, False when none is; a :class:`SettingError` naming
    the unset ones when only some are (they configure one thing together)."""
    unset = [name for name in names if not is_set(name)]
    if not unset:
        return True
    if len(unset) == len(names):
        return False
    given = [name for name in names if name not in unset]
    raise SettingError(
        f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set, but {' and '.join(given)} "
        f"{'is' if len(given) == 1 else 'are'}: set all of {', '.join(names)} or none of them"
    )


def secret_values() -> list[str]:
    """The values of every secret setting that has one (set, or its default): what nothing published may hold."""
    return [text for name, setting in SETTINGS.items() if setting.secret and (text := value(name))]


def _known(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(f"{name} is not a setting of this pipeline; add it to pipeline/settings.py") from None

"""Schema migrations: the Alembic revisions in ``pipeline/store/migrations``, run on every store opening.

Who runs them: ``pipeline release`` on Heroku (the Procfile's release phase), before the new
code's dynos start; and every :class:`~pipeline.store.state.StateStore` as it opens, so local
SQLite data (the demo, the command line, tests) and any process started before a release
upgrade themselves. An opening that finds the database at the newest revision changes nothing
and takes no lock.

Databases written before Alembic have the pipeline's tables but no version table: they are
recognised by their columns and stamped at the revision they match, then upgraded like any other.
The version table is ``pipeline_alembic_version``, because on Heroku Dagster keeps its own
``alembic_version`` in the same database.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

VERSION_TABLE = "pipeline_alembic_version"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key (any fixed number) under which one process at a time migrates.
_SCHEMA_LOCK_KEY = 0x70697065
# The revisions that databases from before Alembic are stamped at (see unversioned_revision).
BASELINE_REVISION = "0001"
RANKINGS_BY_CANDIDATES_REVISION = "0002"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here rather than read from a file, so that an installed
    package (the Heroku slug) migrates without the repository's ``pyproject.toml``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def pipeline_tables_only(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic's ``include_name`` filter: on Heroku, Dagster's tables share the database, and
    comparing the schema (autogenerate, ``alembic check``) must neither report nor drop them."""
    return type_ != "table" or (name or "").startswith("pipeline_")


@cache
def head_revisions() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_heads()


def _columns(inspector: sa.Inspector, table: str) -> set[str]:
    return {column["name"] for column in inspector.get_columns(table)} if inspector.has_table(table) else set()


def unversioned_revision(connection: Connection) -> str | None:
    """The revision to stamp a database without a version table at; None to upgrade it from the start.

    A database written by the code of 87b399d is at the baseline, and so is one written between
    it and Alembic, when revision 0002's changes came one merge at a time: 0002 applies to such a
    database only the changes it lacks. Only a database with all of them is at 0002. An empty
    database, or one older than 87b399d, is upgraded from the start: the baseline revision brings
    the older shapes up to it.
    """
    inspector = sa.inspect(connection)
    pages = _columns(inspector, "pipeline_pages")
    if "links" not in pages or "passages" not in _columns(inspector, "pipeline_context_sets"):
        return None
    if (
        "redirected_since" in pages
        and "candidates_hash" in _columns(inspector, "pipeline_reranked")
        and inspector.has_table("pipeline_retained_embeddings")
        and inspector.has_table("pipeline_orphaned_sources")
    ):
        return RANKINGS_BY_CANDIDATES_REVISION
    return BASELINE_REVISION


def _lock(connection: Connection) -> None:
    """Hold the schema lock until the transaction ends, so that processes opening together
    (a first run's step processes, web, worker and release) migrate one at a time."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
    else:
        # SQLite: take the write lock now, before reading the version, not at the first change.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade_schema(engine: Engine) -> None:
    """Bring the pipeline's tables to the newest revision, in one transaction."""
    with engine.connect() as connection:
        if current_revisions(connection) == head_revisions():
            return
    with engine.connect() as connection, connection.begin():
        _lock(connection)
        # Another process may have migrated while this one waited for the lock.
        current = current_revisions(connection)
        if current == head_revisions():
            return
        config = alembic_config(connection)
        if not current:
            revision = unversioned_revision(connection)
            if revision is not None:
                command.stamp(config, revision)
        command.upgrade(config, "head")
